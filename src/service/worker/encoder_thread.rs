//! A model instance's encoders on their own thread, beside its model thread: it loads and owns
//! the encoders (their tensors never leave it) and serves the instance's Embed queue, taking
//! every request waiting as one batch ([`embedder::process`]).
//!
//! Why not on the model thread: a 29 s audio clip takes hundreds of milliseconds of encoder
//! work, and run between two denoising steps it held every Bridge in the batch for that long
//! (two clients looping long clips turned a 37 ms Bridge into 12-15 s). Here the OS shares the
//! cores instead, and the thread runs at a lower CPU priority ([`ENCODER_NICE`]): when Bridge
//! steps and audio encoding compete for a core, the steps win most of it and the encoder gets
//! the rest (and every idle cycle), so heavy audio cannot starve bridging, nor bridging stop
//! the encoders outright.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tch::Device;
use tokio::sync::mpsc;

use crate::encoders::EncoderError;
use crate::service::error::ServiceError;
use crate::service::ops::memory;
use crate::service::ops::threads::{self, IoThreadPolicy};
use crate::service::types::EmbedderInfo;
use crate::service::worker::death_watch::DeathWatch;
use crate::service::worker::embedder::{self, EmbedJob};
use crate::service::worker::options::WorkerOptions;

/// How much the encoder thread lowers its CPU priority (Linux nice increment, per thread).
/// Nice 10 weighs about a tenth of nice 0 under Linux's scheduler: a Bridge sharing a core with
/// an audio encoding keeps ~90% of it, and the encoder still progresses under a steady load.
pub const ENCODER_NICE: i32 = 10;

/// The encoders' load result: what they encode, `None` when the model has none.
pub(super) type Loaded = Result<Option<EmbedderInfo>, EncoderError>;

/// Starts the encoder thread of instance `instance`: it loads `<dir>/encoders` on `device`,
/// reports on the returned receiver, then serves `jobs` until that queue closes.
pub(super) fn spawn(
    instance: usize,
    dir: PathBuf,
    device: Device,
    opts: WorkerOptions,
    jobs: mpsc::Receiver<EmbedJob>,
    watch: DeathWatch,
) -> Result<(JoinHandle<()>, std_mpsc::Receiver<Loaded>), ServiceError> {
    let (loaded_tx, loaded) = std_mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(format!("diffgap-encode-{instance}"))
        .spawn(move || {
            let _watch = watch;
            run(&dir, device, opts, jobs, &loaded_tx);
            // The encoders are dropped: their memory goes back to the system.
            memory::release_freed();
        })
        .map_err(|e| ServiceError::Internal(format!("cannot start an encoder thread: {e}")))?;
    Ok((thread, loaded))
}

fn run(
    dir: &std::path::Path,
    device: Device,
    opts: WorkerOptions,
    mut jobs: mpsc::Receiver<EmbedJob>,
    loaded: &std_mpsc::SyncSender<Loaded>,
) {
    // Started from a runtime thread (a reload), it would inherit that thread's policy.
    if let Err(e) = threads::set_current(IoThreadPolicy::Normal) {
        tracing::warn!("cannot reset the encoder thread's scheduling policy: {e}");
    }
    if let Err(e) = threads::lower_current_priority(ENCODER_NICE) {
        tracing::warn!("cannot lower the encoder thread's priority: {e}");
    }
    // The model thread's setting, so that results do not depend on which thread encodes, and
    // libtorch's default for new threads (the last value set) stays what the model threads set.
    if let Some(n) = opts.threads_per_instance() {
        tch::set_num_threads(n as i32);
    }
    let set = match embedder::load(dir, device) {
        Ok(set) => {
            let _ = loaded.send(Ok(set.as_ref().map(embedder::info_of)));
            set
        }
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    };
    let _no_grad = tch::no_grad_guard();
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        embedder::process(set.as_ref(), batch);
    }
}
