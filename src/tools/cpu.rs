//! CPU time per process group from `/proc`, to put a cost on each decided order that does not
//! depend on how busy the machine was: the service, PostgreSQL, RabbitMQ (`beam.smp`), this
//! load generator, and the whole machine.
//!
//! A group's time is the user + system time of its processes, plus what their exited children
//! left in `cutime`/`cstime` (a PostgreSQL backend that ends between two readings still counts,
//! through the postmaster). `/proc` counts in USER_HZ ticks, 100 per second on Linux.

use std::collections::HashMap;
use std::time::Instant;

/// USER_HZ: the unit of `/proc/<pid>/stat` and `/proc/stat` times on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// The process groups a report names, in order.
pub const GROUPS: [&str; 4] = ["orderflow", "postgres", "beam.smp", "loadgen"];

/// One reading of every group's CPU time (seconds) and the machine's busy and total time.
#[derive(Debug, Clone)]
pub struct CpuReading {
    at: Instant,
    /// Each process's CPU seconds by (group, pid): a process that ends between two readings
    /// (a test's own broker node) takes its own time with it, never the others'.
    processes: HashMap<(&'static str, u32), f64>,
    busy: f64,
    total: f64,
}

/// CPU used between two readings.
#[derive(Debug, Clone)]
pub struct CpuUse {
    pub seconds: f64,
    /// CPU seconds per group.
    pub groups: Vec<(&'static str, f64)>,
    /// CPU seconds of the whole machine (every process, kernel included), and its capacity.
    pub busy: f64,
    pub capacity: f64,
}

/// Which group a process is in: `orderflow` for the service (any `orderflow` process but this
/// one), `loadgen` for this process, or by its command name.
fn group_of(pid: u32, comm: &str) -> Option<&'static str> {
    if pid == std::process::id() {
        return Some("loadgen");
    }
    match comm {
        "orderflow" => Some("orderflow"),
        "postgres" => Some("postgres"),
        "beam.smp" => Some("beam.smp"),
        _ => None,
    }
}

/// utime + stime + cutime + cstime (seconds) from a `/proc/<pid>/stat` line, and its command.
fn parse_stat(line: &str) -> Option<(String, f64)> {
    // "pid (comm) state ppid …": the command may hold spaces and parentheses; it ends at the
    // last ')'.
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = line.get(close + 2..)?.split_whitespace().collect();
    // After the command: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let ticks: f64 = rest
        .get(11..15)?
        .iter()
        .map(|v| v.parse::<f64>().ok())
        .sum::<Option<f64>>()?;
    Some((comm, ticks / TICKS_PER_SECOND))
}

/// The machine's busy and total CPU seconds from the first line of `/proc/stat`.
fn machine() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = stat.lines().next() else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    // idle (3) and iowait (4) are not busy.
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / TICKS_PER_SECOND, total / TICKS_PER_SECOND)
}

/// Reads every process now.
pub fn read() -> CpuReading {
    let mut processes: HashMap<(&'static str, u32), f64> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue; // gone meanwhile
            };
            if let Some((comm, seconds)) = parse_stat(&line) {
                if let Some(group) = group_of(pid, &comm) {
                    processes.insert((group, pid), seconds);
                }
            }
        }
    }
    let (busy, total) = machine();
    CpuReading {
        at: Instant::now(),
        processes,
        busy,
        total,
    }
}

impl CpuReading {
    /// What was used from `self` to `later`: per group, what each process still there used
    /// (all of it for one started meanwhile).
    pub fn until(&self, later: &CpuReading) -> CpuUse {
        let groups = GROUPS
            .iter()
            .map(|g| {
                let used: f64 = later
                    .processes
                    .iter()
                    .filter(|((group, _), _)| group == g)
                    .map(|(key, after)| {
                        let before = self.processes.get(key).copied().unwrap_or(0.0);
                        (after - before).max(0.0)
                    })
                    .sum();
                (*g, used)
            })
            .collect();
        CpuUse {
            seconds: later.at.saturating_duration_since(self.at).as_secs_f64(),
            groups,
            busy: (later.busy - self.busy).max(0.0),
            capacity: (later.total - self.total).max(0.0),
        }
    }
}

impl CpuUse {
    /// CPU seconds of one group.
    pub fn of(&self, group: &str) -> f64 {
        self.groups
            .iter()
            .find(|(g, _)| *g == group)
            .map_or(0.0, |(_, s)| *s)
    }

    /// "orderflow 412 µs, postgres 230 µs, … machine 1,310 µs (of 2 cores, 86 % busy)" for
    /// `units` units of work (decided orders).
    pub fn per_unit(&self, units: u64) -> String {
        if units == 0 {
            return "no orders".into();
        }
        let micros = |s: f64| s * 1e6 / units as f64;
        let mut parts: Vec<String> = self
            .groups
            .iter()
            .map(|(g, s)| format!("{g} {:.0} µs", micros(*s)))
            .collect();
        parts.push(format!(
            "machine {:.0} µs ({:.0} % busy)",
            micros(self.busy),
            if self.capacity > 0.0 {
                100.0 * self.busy / self.capacity
            } else {
                0.0
            }
        ));
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_command_and_all_four_times() {
        let line =
            "4242 (beam.smp) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 30 0 1 1 1";
        let (comm, seconds) = parse_stat(line).unwrap();
        assert_eq!(comm, "beam.smp");
        assert!((seconds - 3.10).abs() < 1e-9, "{seconds}");
        // A command with spaces and a parenthesis.
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(odd).unwrap(), ("a (b) c".to_owned(), 0.10));
    }

    #[test]
    fn this_process_is_the_load_generator_and_its_cpu_is_seen() {
        let before = read();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 120 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 42);
        let used = before.until(&read());
        assert!(used.of("loadgen") >= 0.05, "{used:?}");
        assert!(used.busy >= used.of("loadgen") - 0.02, "{used:?}");
    }
}
