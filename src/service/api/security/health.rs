//! The client side of `diffgap health` (the container's HEALTHCHECK): asks the server's
//! `grpc.health.v1.Health/Check`.

use std::time::Duration;

use tonic::transport::{Certificate, Identity};

use super::tls::{error_chain, read_certs, read_key};

/// What `diffgap health` asks: the address, optional TLS settings, the service name.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// The server: host:port, or a URL (http://... or https://...).
    #[arg(long, default_value = "127.0.0.1:50051", env = "DIFFGAP_HEALTH_ADDR")]
    pub addr: String,
    /// The service whose status is asked ("" asks for the server as a whole).
    #[arg(long, default_value = "diffgap.v1.Diffgap")]
    pub service: String,
    /// Seconds to wait for the answer (connection included).
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
    /// Use TLS, trusting this CA (PEM). An https:// address asks for TLS too (and needs
    /// this CA).
    #[arg(long, value_name = "PEM", env = "DIFFGAP_HEALTH_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (default: the address's host).
    #[arg(long, env = "DIFFGAP_HEALTH_DOMAIN")]
    pub domain: Option<String>,
    /// Client certificate (PEM) for a server that requires mutual TLS; needs --key.
    #[arg(long, value_name = "PEM", env = "DIFFGAP_HEALTH_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", env = "DIFFGAP_HEALTH_KEY")]
    pub key: Option<std::path::PathBuf>,
}

/// Asks the server's `grpc.health.v1.Health/Check` for `args.service`: the status's name
/// (SERVING, NOT_SERVING, ...) or why there is none.
pub async fn check_health(args: &HealthArgs) -> Result<String, String> {
    use tonic::transport::{Channel, ClientTlsConfig};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

    let tls = args.ca.is_some() || args.cert.is_some() || args.addr.starts_with("https://");
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else if tls {
        format!("https://{}", args.addr)
    } else {
        format!("http://{}", args.addr)
    };
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let mut endpoint = Channel::from_shared(url.clone())
        .map_err(|e| format!("--addr: '{url}' is not a valid URL: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if tls {
        let mut cfg = ClientTlsConfig::new();
        match &args.ca {
            Some(ca) => {
                cfg = cfg.ca_certificate(Certificate::from_pem(read_certs("--ca", ca)?));
            }
            None => {
                return Err(
                    "--ca: needed for TLS (the CA that signed the server's certificate)".into(),
                )
            }
        }
        if let Some(d) = &args.domain {
            cfg = cfg.domain_name(d.clone());
        }
        match (&args.cert, &args.key) {
            (Some(c), Some(k)) => {
                cfg = cfg.identity(Identity::from_pem(
                    read_certs("--cert", c)?,
                    read_key("--key", k)?,
                ));
            }
            (None, None) => {}
            _ => return Err("--cert and --key: give both or neither".into()),
        }
        endpoint = endpoint
            .tls_config(cfg)
            .map_err(|e| format!("TLS settings: {}", error_chain(&e)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {}", error_chain(&e)))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|s| format!("health check failed: {:?}: {}", s.code(), s.message()))?;
    let status = ServingStatus::try_from(answer.into_inner().status)
        .map_or("UNKNOWN_VALUE", |s| s.as_str_name());
    Ok(status.to_owned())
}
