//! How a model worker batches, queues and shares out the cores among its instances.

use std::time::Duration;

use tch::Device;

use crate::device::Dtype;
use crate::service::config::ServeConfig;
use crate::service::types::Batching;

/// How the worker batches and queues.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Most rows in one network pass (per instance).
    pub max_batch_rows: usize,
    /// Requests that may wait in the queue (shared out over the instances).
    pub queue_capacity: usize,
    /// Most bridge work (row-steps: rows x samples x steps) outstanding on one instance,
    /// running or waiting; more is refused, except on an idle instance (0: see
    /// [`WorkerOptions::row_step_budget`]).
    pub max_queue_row_steps: usize,
    pub batching: Batching,
    /// When idle, how long the first arriving request may wait for others before the first
    /// step (zero: start at once).
    pub max_batch_wait: Duration,
    /// Model instances, each on its own thread with its own copy of the model (0: see
    /// [`WorkerOptions::resolved`]).
    pub instances: usize,
    /// libtorch intra-op threads of each instance (0: the cores shared out over the
    /// instances, or libtorch's default with one instance).
    pub intra_op_threads: usize,
    /// Number format of the denoiser network.
    pub dtype: Dtype,
}

impl WorkerOptions {
    pub fn new(max_batch_rows: usize, queue_capacity: usize) -> Self {
        Self {
            max_batch_rows,
            queue_capacity,
            max_queue_row_steps: 0,
            batching: Batching::Step,
            max_batch_wait: Duration::ZERO,
            instances: 1,
            intra_op_threads: 0,
            dtype: Dtype::Float32,
        }
    }

    /// With `instances` 0 ("auto"): one instance per core on the CPU, one on a GPU (where
    /// instances would only share one device queue).
    pub fn resolved(self, device: Device) -> Self {
        let instances = match (self.instances, device) {
            (0, Device::Cpu) => cores(),
            (0, _) => 1,
            (n, _) => n,
        };
        Self { instances, ..self }
    }

    /// The row-step budget of an instance: `max_queue_row_steps`, or by default
    /// [`AUTO_ROW_STEPS_PER_BATCH_ROW`] per batch row (a full batch of 50-step rows twice
    /// over, or of the 10-step default ten times), and no less than the default batch's
    /// (a small batch is a latency setting, not a reason to refuse work the queue can hold).
    pub fn row_step_budget(&self) -> usize {
        match self.max_queue_row_steps {
            0 => self
                .max_batch_rows
                .max(DEFAULT_BATCH_ROWS)
                .saturating_mul(AUTO_ROW_STEPS_PER_BATCH_ROW),
            n => n,
        }
    }

    /// The intra-op threads each instance sets, or `None` to leave libtorch's default.
    pub fn threads_per_instance(&self) -> Option<usize> {
        self.threads_per_instance_on(cores())
    }

    /// [`Self::threads_per_instance`] on a machine (or CPU set) of `cores` cores.
    pub fn threads_per_instance_on(&self, cores: usize) -> Option<usize> {
        if self.intra_op_threads > 0 {
            return Some(self.intra_op_threads);
        }
        (self.instances > 1).then(|| (cores / self.instances).max(1))
    }
}

/// The default row-step budget per row of `max_batch_rows`.
pub const AUTO_ROW_STEPS_PER_BATCH_ROW: usize = 100;
/// The default `max_batch_rows`, the least the default budget is counted from.
const DEFAULT_BATCH_ROWS: usize = 256;

/// The cores this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl From<&ServeConfig> for WorkerOptions {
    fn from(cfg: &ServeConfig) -> Self {
        Self {
            max_batch_rows: cfg.max_batch_rows,
            queue_capacity: cfg.queue_capacity,
            max_queue_row_steps: cfg.max_queue_row_steps,
            batching: cfg.batching,
            max_batch_wait: Duration::from_millis(cfg.max_batch_wait_ms),
            instances: cfg.instances,
            intra_op_threads: cfg.intra_op_threads,
            dtype: cfg.dtype,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_step_budget_is_set_or_follows_the_batch() {
        let budget = |rows, set| {
            WorkerOptions {
                max_queue_row_steps: set,
                ..WorkerOptions::new(rows, 8)
            }
            .row_step_budget()
        };
        assert_eq!(budget(256, 0), 25_600);
        assert_eq!(budget(1024, 0), 102_400);
        assert_eq!(budget(3, 0), 25_600, "no less than the default batch's");
        assert_eq!(budget(3, 500), 500);
    }

    #[test]
    fn auto_instances_are_one_per_core_on_the_cpu_and_one_on_a_gpu() {
        let auto = WorkerOptions {
            instances: 0,
            ..WorkerOptions::new(8, 8)
        };
        assert_eq!(auto.resolved(Device::Cpu).instances, cores());
        assert_eq!(auto.resolved(Device::Cuda(0)).instances, 1);
        let three = WorkerOptions {
            instances: 3,
            ..auto
        };
        assert_eq!(three.resolved(Device::Cpu).instances, 3);
        assert_eq!(three.resolved(Device::Cuda(0)).instances, 3);
    }

    #[test]
    fn instances_share_out_the_cores_unless_told_otherwise() {
        let one = WorkerOptions::new(8, 8);
        assert_eq!(one.threads_per_instance(), None, "libtorch's default");
        let many = WorkerOptions {
            instances: cores() * 2,
            ..one
        };
        assert_eq!(many.threads_per_instance(), Some(1), "at least one thread");
        let told = WorkerOptions {
            intra_op_threads: 3,
            ..many
        };
        assert_eq!(told.threads_per_instance(), Some(3));
        if cores() >= 2 {
            let two = WorkerOptions {
                instances: 2,
                ..one
            };
            assert_eq!(two.threads_per_instance(), Some(cores() / 2));
        }
    }
}
