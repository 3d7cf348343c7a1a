//! How fast the machine is while the bench runs: the two costs that a lone client's durable
//! write waits on most, measured the same way in every run so that tables taken on different
//! days can be told apart. A shared two-core VM of this kind changes speed by about two times
//! from one day to the next, for every build alike.
//!
//! - A disk sync: `fdatasync` after appending 200 bytes to a file in the directory the nodes
//!   keep their data in (every Raft append is one such sync, on the leader and then on a
//!   follower).
//! - A wake-up: one byte to an echoing thread and back over loopback TCP (each write crosses
//!   loopback four times, and each crossing wakes a thread that was waiting for it).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Samples of each probe: enough for a steady median, a second or so in a slow spell.
const SAMPLES: usize = 1_000;

/// The medians of the two probes.
#[derive(Clone, Copy, Debug)]
pub struct MachineSpeed {
    /// `fdatasync` after a 200-byte append.
    pub sync: Duration,
    /// A 1-byte round trip over loopback TCP between two threads.
    pub round_trip: Duration,
}

impl MachineSpeed {
    /// Measures both probes, syncing a scratch file in `dir`.
    pub fn measure(dir: &Path) -> std::io::Result<Self> {
        Ok(Self { sync: median_sync(dir)?, round_trip: median_round_trip()? })
    }

    /// One line for the report, e.g. `fdatasync p50 0.21 ms, loopback round trip p50 122 µs`.
    pub fn line(&self) -> String {
        format!(
            "fdatasync p50 {:.2} ms, loopback round trip p50 {} µs",
            self.sync.as_secs_f64() * 1e3,
            self.round_trip.as_micros()
        )
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn median_sync(dir: &Path) -> std::io::Result<Duration> {
    let mut file = tempfile::tempfile_in(dir)?;
    let record = [0x5a_u8; 200];
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        file.write_all(&record)?;
        let start = Instant::now();
        file.sync_data()?;
        samples.push(start.elapsed());
    }
    Ok(median(samples))
}

fn median_round_trip() -> std::io::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut peer, _) = listener.accept()?;
        peer.set_nodelay(true)?;
        let mut byte = [0_u8; 1];
        // Ends when the other side closes (a read of 0 bytes) or fails.
        while peer.read(&mut byte)? == 1 {
            peer.write_all(&byte)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut samples = Vec::with_capacity(SAMPLES);
    let mut byte = [0_u8; 1];
    for _ in 0..SAMPLES {
        let start = Instant::now();
        stream.write_all(&byte)?;
        stream.read_exact(&mut byte)?;
        samples.push(start.elapsed());
    }
    drop(stream);
    echo.join().map_err(|_| std::io::Error::other("the echo thread panicked"))??;
    Ok(median(samples))
}
