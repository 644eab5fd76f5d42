//! Telling the worker that an instance's model or encoder thread died: a guard dropped while
//! the thread unwinds from a panic.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Sends on `died` when a model thread unwinds from a panic (the first one only).
pub(crate) struct DeathWatch {
    instance: usize,
    tx: Arc<Mutex<Option<oneshot::Sender<String>>>>,
}

impl DeathWatch {
    pub(super) fn new(instance: usize, tx: Arc<Mutex<Option<oneshot::Sender<String>>>>) -> Self {
        Self { instance, tx }
    }
}

impl Drop for DeathWatch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(tx) = self.tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(format!("model instance {} panicked", self.instance));
            }
        }
    }
}
