//! What a process uses, read from `/proc`, and a memory watchdog.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Linux's clock ticks per second for `/proc/<pid>/stat` times.
const CLOCK_TICKS: f64 = 100.0;

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User plus system CPU time the process has used.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / CLOCK_TICKS))
}

/// Kills a process (SIGKILL) once its resident memory passes a limit, and
/// keeps the highest resident size it saw.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    tripped: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(pid: u32, limit: u64) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let tripped = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, t, p) = (stop.clone(), tripped.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Some(rss) = status_bytes(pid, "VmRSS:") else {
                    return;
                };
                p.fetch_max(rss, Ordering::SeqCst);
                if rss > limit {
                    t.store(true, Ordering::SeqCst);
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watchdog {
            stop,
            tripped,
            peak,
            thread: Some(thread),
        }
    }

    /// Whether it killed the process.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// The highest resident size sampled.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(status_bytes(pid, "VmRSS:").unwrap() > 0);
        assert!(cpu_time(pid).is_some());
    }
}
