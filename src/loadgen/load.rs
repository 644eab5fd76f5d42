//! The requests `diffgap loadgen` sends: the served model's direction and dimension, asked of
//! the server once, and deterministic embeddings with the step counts cycled by request index.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tonic::transport::Channel;

use super::args::LoadgenArgs;
use super::{BridgeItem, BridgeRequest, DiffgapClient, InfoRequest};
use crate::model::row_seed;
use crate::service::proto::ModelInfo;

/// What the load needs to know about the served model.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Target {
    pub from: String,
    pub to: String,
    pub dim: usize,
}

/// The shape of every request: its items' embeddings, step counts cycled by request index.
pub(super) struct Load {
    target: Target,
    steps: Vec<usize>,
    items: usize,
    samples: usize,
    timeout: Duration,
    /// Whether a refused closed-loop client waits out the server's retry pushback.
    pub honor_pushback: bool,
}

impl Load {
    pub fn new(target: Target, args: &LoadgenArgs) -> Self {
        Self {
            target,
            steps: args.steps.clone(),
            items: args.items,
            samples: args.samples,
            timeout: Duration::from_secs_f64(args.timeout),
            honor_pushback: args.honor_pushback,
        }
    }

    fn request(&self, i: usize) -> tonic::Request<BridgeRequest> {
        let steps = self.steps[i % self.steps.len()];
        let items = (0..self.items)
            .map(|j| {
                let seed = row_seed(i as u64, j);
                let values = vector(seed, self.target.dim);
                BridgeItem {
                    steps: Some(steps as u32),
                    samples: Some(self.samples as u32),
                    ..BridgeItem::new(&self.target.from, &self.target.to, values, Some(seed))
                }
            })
            .collect();
        let mut req = tonic::Request::new(BridgeRequest::new(items));
        req.set_timeout(self.timeout);
        req
    }
}

/// The retry delay a refusal asks for (its `grpc-retry-pushback-ms`), at most 10 s.
pub(super) fn pushback(status: &tonic::Status) -> Option<Duration> {
    let ms: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms.min(10_000)))
}

/// A deterministic pseudo-random vector with components in [-0.5, 0.5).
pub(super) fn vector(seed: u64, dim: usize) -> Vec<f32> {
    lcg_vector(seed | 1, dim)
}

/// `dim` components in [-0.5, 0.5) from a 64-bit linear congruential generator started at
/// `state` (deterministic load and test vectors).
pub fn lcg_vector(state: u64, dim: usize) -> Vec<f32> {
    let mut s = state;
    (0..dim)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Request `i` of the load, answered or not.
pub(super) async fn one(
    client: &mut DiffgapClient<Channel>,
    load: &Load,
    i: usize,
) -> Result<(), tonic::Status> {
    client.bridge(load.request(i)).await.map(|_| ())
}

/// A client of a server that answers Info, with what it serves: its device, its first model
/// and that model's first direction.
pub struct ReadyServer {
    pub client: DiffgapClient<Channel>,
    pub device: String,
    pub model: ModelInfo,
    pub from: String,
    pub to: String,
}

/// A client of `addr` on a connection of its own, made on first use.
pub fn lazy_client(addr: &str) -> Result<DiffgapClient<Channel>> {
    let channel = Channel::from_shared(addr.to_owned())
        .context("--addr")?
        .connect_lazy();
    Ok(DiffgapClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// Connects to `addr` and waits (at most 120 s) for a server still starting to answer Info.
pub async fn ready_server(addr: &str) -> Result<ReadyServer> {
    // Connects on first use; a server still starting answers UNAVAILABLE, retried below.
    let mut client = lazy_client(addr)?;
    let ready_by = Instant::now() + Duration::from_secs(120);
    let info = loop {
        match client.info(InfoRequest {}).await {
            Ok(info) => break info.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < ready_by => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(s) => return Err(anyhow::anyhow!("Info: {s}")),
        }
    };
    let model = info
        .models
        .into_iter()
        .next()
        .context("the server serves no model")?;
    let dir = model
        .directions
        .first()
        .context("the model has no direction")?;
    let (from, to) = dir
        .split_once("->")
        .with_context(|| format!("direction '{dir}'"))?;
    Ok(ReadyServer {
        client,
        device: info.device,
        from: from.into(),
        to: to.into(),
        model,
    })
}

/// `--connections` clients of `--addr` (each on its own connection) and the model it serves
/// (its first model and direction), once the server answers Info.
pub(super) async fn connect(args: &LoadgenArgs) -> Result<(Vec<DiffgapClient<Channel>>, Target)> {
    let (clients, target, _) = connect_to(&args.addr, &args.label, args).await?;
    Ok((clients, target))
}

/// `--connections` clients of `addr` and the model it serves, as [`connect`] (`label` is
/// printed with it), with the server's description of that model.
pub(super) async fn connect_to(
    addr: &str,
    label: &str,
    args: &LoadgenArgs,
) -> Result<(Vec<DiffgapClient<Channel>>, Target, ModelInfo)> {
    let s = ready_server(addr).await?;
    let mut clients = vec![s.client];
    for _ in 1..args.connections {
        clients.push(lazy_client(addr)?);
    }
    println!(
        "server {} ({}, model {}, dim {}, {}->{}){}: steps {:?} cycled, {} item(s) x {} sample(s) per request, {} connection(s)",
        addr,
        s.device,
        s.model.name,
        s.model.dim,
        s.from,
        s.to,
        if label.is_empty() {
            String::new()
        } else {
            format!(" [{label}]")
        },
        args.steps,
        args.items,
        args.samples,
        args.connections
    );
    let target = Target {
        dim: s.model.dim as usize,
        from: s.from,
        to: s.to,
    };
    Ok((clients, target, s.model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_and_bounded() {
        let a = vector(3, 32);
        assert_eq!(a, vector(3, 32));
        assert_ne!(a, vector(4, 32));
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
    }
}
