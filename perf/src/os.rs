//! The little the benchmarks need from the OS: pinning to a CPU (`--cpu N`) and the calling
//! thread's CPU time (to tell whether a timed run had the CPU to itself).

use std::io;
use std::time::Duration;

/// Restricts the calling process (all its future threads) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpu >= max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU number must be below {max}"),
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bit array for which all-zero is the valid empty set;
    // `CPU_SET` writes one bit inside it (`cpu` was checked against its size above); and
    // `sched_setaffinity` only reads `size_of::<cpu_set_t>()` bytes from the pointer, which
    // points to that live local.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU time consumed by the calling thread so far (zero if the clock is unavailable).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the pointer, which points to a
    // live, properly aligned local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Busy and total time of all CPUs together, in clock ticks, and the number of CPUs, from
/// /proc/stat (busy: everything but idle and iowait; steal included, the host took it).
fn machine_ticks() -> Option<(u64, u64, usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 8 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields[4];
    Some((total - idle, total, cpus))
}

/// Wall-clock and CPU-time stopwatch: `share()` is the fraction of the wall-clock time the
/// thread was on a CPU (1.0 when it ran undisturbed; lower when other processes took turns),
/// `others_busy()` how busy the rest of the machine was meanwhile (other processes on the
/// other CPUs share the caches and memory bandwidth, and may be SMT siblings on the host).
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    wall: std::time::Instant,
    cpu: Duration,
    machine: Option<(u64, u64, usize)>,
}

/// What a [`Stopwatch`] saw.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    /// Thread CPU time / wall time, at most 1.
    pub share: f64,
    /// Busy fraction of the other CPUs, when measurable.
    pub others_busy: Option<f64>,
}

impl Stopwatch {
    /// Starts the clocks.
    pub fn start() -> Self {
        Stopwatch {
            machine: machine_ticks(),
            wall: std::time::Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    /// Fraction of the other CPUs' time (all CPUs minus the one this thread ran on) that was
    /// busy since `start`; `None` when /proc/stat is unreadable or the interval too short
    /// to tell (ticks are 10 ms).
    pub fn others_busy(&self) -> Option<f64> {
        let (busy0, total0, _) = self.machine?;
        let (busy1, total1, cpus) = machine_ticks()?;
        let cpus = cpus as f64;
        let total = (total1 - total0) as f64;
        if total < 10.0 * cpus || cpus < 1.5 {
            return None;
        }
        // This thread's CPU time in ticks (USER_HZ = 100 on Linux).
        let own = thread_cpu_time().saturating_sub(self.cpu).as_secs_f64() * 100.0;
        let one_cpu = total / cpus;
        let others_busy = (busy1 - busy0) as f64 - own;
        Some((others_busy / (total - one_cpu)).clamp(0.0, 1.0))
    }

    /// Both figures since `start`.
    pub fn read(&self) -> Reading {
        Reading {
            share: self.share(),
            others_busy: self.others_busy(),
        }
    }

    /// CPU time / wall time since `start`, capped at 1.
    pub fn share(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = thread_cpu_time().saturating_sub(self.cpu).as_secs_f64();
        if wall <= 0.0 {
            1.0
        } else {
            (cpu / wall).min(1.0)
        }
    }
}

/// Estimated core clock in GHz: a dependent chain of `x = x * x ^ c` (64-bit multiply, 3
/// cycles, then xor, 1 cycle, on current AMD and Intel cores) timed over 50M steps, the
/// fastest of 3. A latency-bound chain is not slowed by a busy SMT sibling, so this tells a
/// frequency drop apart from contention for the core: if ns/packet rises while this stays,
/// something else (another tenant on the host core, caches) took the difference.
pub fn clock_ghz_estimate() -> f64 {
    const STEPS: u64 = 50_000_000;
    const CYCLES_PER_STEP: f64 = 4.0;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let mut x = std::hint::black_box(0x1234_5678_9abc_def1u64);
        let c = std::hint::black_box(0x9e37_79b9_7f4a_7c15u64);
        let start = std::time::Instant::now();
        for _ in 0..STEPS {
            x = x.wrapping_mul(x) ^ c;
        }
        let ns = start.elapsed().as_nanos() as f64;
        std::hint::black_box(x);
        best = best.min(ns);
    }
    CYCLES_PER_STEP * STEPS as f64 / best
}
