//! `diffgap serve` as a child process, for what belongs to a process: its file limit, its CPU
//! time, real signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `diffgap serve`; killed when dropped if still running.
pub struct ServeProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl ServeProcess {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid")
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit: whether it exited 0.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        // SAFETY: a plain syscall on our own child's pid, which it still holds (not reaped).
        let rc = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("diffgap serve did not exit within {limit:?} of SIGTERM");
    }
}

/// Starts `diffgap serve` on `model` (loopback, ephemeral ports, CPU, JSON logs) with `args`,
/// under a file limit of `fd_limit` descriptors when given; returns once both listeners are
/// bound (the model may still be loading). Its log goes to this process's stderr.
pub fn spawn_serve(model: &Path, args: &[&str], fd_limit: Option<u64>) -> ServeProcess {
    let mut cmd = super::diffgap_command();
    cmd.args(["serve", "--model"])
        .arg(model)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--device", "cpu", "--log-format", "json"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(limit) = fd_limit {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the child between fork and exec, and calls only setrlimit, which is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let rl = libc::rlimit {
                    rlim_cur: limit as libc::rlim_t,
                    rlim_max: limit as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = cmd.spawn().expect("start diffgap serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    // Reads the log to its end, so that the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[serve] {line}");
            if let Some(bound) = bound_address(&line) {
                let _ = tx.send(bound);
            }
        }
    });
    let (mut addr, mut metrics) = (None, None);
    while addr.is_none() || metrics.is_none() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((true, a)) => addr = Some(a),
            Ok((false, a)) => metrics = Some(a),
            Err(e) => panic!("diffgap serve did not report its addresses: {e}"),
        }
    }
    ServeProcess {
        child,
        addr: addr.expect("gRPC address"),
        metrics: metrics.expect("metrics address"),
    }
}

/// The address of a JSON log line announcing a listener: (whether it is the gRPC one, address).
fn bound_address(line: &str) -> Option<(bool, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    let message = fields.get("message")?.as_str()?;
    let addr = fields.get("addr")?.as_str()?.parse().ok()?;
    if message.starts_with("listening") {
        Some((true, addr))
    } else if message.starts_with("serving Prometheus metrics") {
        Some((false, addr))
    } else {
        None
    }
}

/// The CPU time (user and system) process `pid` has used, in seconds.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name (in parentheses, which may hold spaces): state is
    // the first, utime and stime (clock ticks) the 12th and 13th.
    let rest = &stat[stat.rfind(')').expect("(comm)") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second as f64
}

/// How many of process `pid`'s descriptors are numbered below `limit` (the ones a file limit
/// of `limit` counts: new descriptors take the lowest free number).
pub fn fds_below(pid: i32, limit: u64) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&fd| fd < limit)
        .count() as u64
}
