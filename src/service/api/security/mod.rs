//! Transport security and authentication of the gRPC listener.
//!
//! - **TLS** when `tls_cert` and `tls_key` are set (PEM files; rustls with the ring provider),
//!   and **mutual TLS** when `tls_client_ca` is set too: a client must then present a
//!   certificate signed by one of that file's CAs, or its handshake fails.
//! - **Bearer tokens** when `auth_tokens_file` or the environment variable
//!   [`AUTH_TOKENS_ENV`] holds any: every call must carry `authorization: Bearer <token>` with
//!   one of them, else it is answered UNAUTHENTICATED before reaching a service. Tokens are
//!   kept only as SHA-256 digests, compared in constant time against every configured token,
//!   and never logged or printed (`diffgap config print` shows the file's path, not its
//!   content). `grpc.health.v1.Health` stays open, so load balancers and probes need no
//!   token; reflection and `diffgap.v1.Diffgap` need one. Admin tokens (see [`crate::service::api::security::admin`])
//!   are accepted too.
//!
//! Everything is read and checked at start-up ([`Security::load`]); every error names the key
//! (or the variable) it is about.
//!
//! [`check_health`] is the client side of `diffgap health` (the container's HEALTHCHECK).

pub mod admin;
pub mod auth;
pub mod health;
pub mod tls;
pub mod tokens;

use std::fmt;
use std::path::Path;

use tonic::transport::ServerTlsConfig;

pub use auth::{register_metrics, BearerAuthLayer};
pub use health::{check_health, HealthArgs};
pub use tokens::{token_sources, Tokens};

use crate::service::config::ServeConfig;

/// The environment variable that may hold bearer tokens (separated by commas or whitespace).
pub const AUTH_TOKENS_ENV: &str = "DIFFGAP_AUTH_TOKENS";
/// What [`Security::load`] made of the configuration: the TLS settings of the listener (when
/// on) and the authentication layer (a pass-through when no token is configured).
pub struct Security {
    /// The listener's TLS settings, `None` for plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Whether clients must present a certificate (mutual TLS).
    pub client_auth: bool,
    /// The bearer-token layer for every service of the server.
    pub auth: BearerAuthLayer,
    /// The tokens that may call Reload; `None` refuses it.
    pub admin: Option<Tokens>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("auth", &self.auth)
            .field("admin", &self.admin)
            .finish()
    }
}

impl Security {
    /// Reads the certificate, key and CA files and the tokens named by `cfg` and by the
    /// process environment's [`AUTH_TOKENS_ENV`] and [`admin::ADMIN_TOKENS_ENV`].
    pub fn load(cfg: &ServeConfig) -> Result<Self, String> {
        Self::load_with_env(
            cfg,
            std::env::var(AUTH_TOKENS_ENV).ok(),
            std::env::var(admin::ADMIN_TOKENS_ENV).ok(),
        )
    }

    /// [`Security::load`] with the value of [`AUTH_TOKENS_ENV`] given (and no admin tokens
    /// from the environment).
    pub fn load_with(cfg: &ServeConfig, env_tokens: Option<String>) -> Result<Self, String> {
        Self::load_with_env(cfg, env_tokens, None)
    }

    /// [`Security::load`] with the values of both token variables given.
    pub fn load_with_env(
        cfg: &ServeConfig,
        env_tokens: Option<String>,
        env_admin: Option<String>,
    ) -> Result<Self, String> {
        let set = |p: &Path| !p.as_os_str().is_empty();
        let tls = tls::server_config(cfg)?;
        let tokens = token_sources(
            ("auth_tokens_file", &cfg.auth_tokens_file),
            (AUTH_TOKENS_ENV, env_tokens),
            "turn authentication off",
        )?;
        let admin = admin::load(cfg, env_admin)?;
        let auth = if tokens.is_empty() {
            BearerAuthLayer::open()
        } else {
            let mut accepted = Tokens::new(tokens.iter().map(String::as_str));
            if let Some(a) = &admin {
                accepted = accepted.and(a);
            }
            BearerAuthLayer::new(accepted)
        };
        Ok(Self {
            tls,
            client_auth: set(&cfg.tls_client_ca) && set(&cfg.tls_cert),
            auth,
            admin,
        })
    }

    /// One line for the start-up log (never the tokens).
    pub fn describe(&self) -> String {
        let tls = match (self.tls.is_some(), self.client_auth) {
            (false, _) => "plaintext",
            (true, false) => "TLS",
            (true, true) => "mutual TLS (client certificates required)",
        };
        match self.auth.accepted() {
            None => format!("{tls}, no authentication"),
            Some(n) => format!("{tls}, bearer tokens required ({n} configured)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_names_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ServeConfig {
            tls_cert: dir.path().join("missing.pem"),
            tls_key: dir.path().join("key.pem"),
            ..ServeConfig::default()
        };
        let e = Security::load_with(&cfg, None).unwrap_err();
        assert!(e.starts_with("tls_cert: cannot read "), "{e}");
        std::fs::write(dir.path().join("cert.pem"), "not pem").expect("write");
        cfg.tls_cert = dir.path().join("cert.pem");
        let e = Security::load_with(&cfg, None).unwrap_err();
        assert!(
            e.starts_with("tls_cert: ") && e.contains("no PEM certificate"),
            "{e}"
        );

        let file = dir.path().join("tokens");
        std::fs::write(&file, "# none yet\n").expect("write");
        let cfg = ServeConfig {
            auth_tokens_file: file.clone(),
            ..ServeConfig::default()
        };
        let e = Security::load_with(&cfg, None).unwrap_err();
        assert!(
            e.starts_with("auth_tokens_file: ") && e.contains("holds no token"),
            "{e}"
        );
        std::fs::write(&file, "one\n").expect("write");
        let s = Security::load_with(&cfg, Some("two,three".into())).expect("load");
        assert_eq!(
            s.describe(),
            "plaintext, bearer tokens required (3 configured)"
        );
        let e = Security::load_with(&ServeConfig::default(), Some(" ".into())).unwrap_err();
        assert!(
            e.starts_with("DIFFGAP_AUTH_TOKENS: set but holds no token"),
            "{e}"
        );
        let open = Security::load_with(&ServeConfig::default(), None).expect("load");
        assert!(!open.auth.enabled());
        assert_eq!(open.describe(), "plaintext, no authentication");
    }
}
