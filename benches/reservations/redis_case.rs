//! (e) The durable hot SKU as people often build it: Redis, a Lua check-and-decrement, and the
//! append-only file fsynced before every reply (`appendfsync always`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;

use super::{reservations_group, Latencies, HUGE_STOCK};

/// Takes `ARGV[1]` units of `KEYS[1]` if that many are there: 1 when taken, 0 when short.
const CHECK_AND_DECREMENT: &str = "local a = tonumber(redis.call('GET', KEYS[1]) or '0')
local q = tonumber(ARGV[1])
if a >= q then redis.call('DECRBY', KEYS[1], q) return 1 end
return 0";

/// A `redis-server` of the bench's own, killed (and its directory removed) when dropped.
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Server {
    /// `None` when `redis-server` is not installed.
    fn start(case: &str) -> Option<Server> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Under the target directory (a disk), not /tmp (a tmpfs on some systems, where fsync
        // costs nothing).
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "orderflow-bench-redis-{}-{case}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("redis directory");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            // No rewrite of the file during the run: its growth is checked after.
            .args(["--auto-aof-rewrite-percentage", "0"])
            .args(["--save", "", "--protected-mode", "no", "--daemonize", "no"])
            .args(["--maxclients", "1000", "--logfile", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = Server { child, dir, port };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(mut conn) = server.connect() {
                if conn.call(&[b"PING"]).is_ok() {
                    return Some(server);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not answer on port {port}");
    }

    fn connect(&self) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            line: String::new(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One client connection speaking RESP.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
}

impl Conn {
    /// Sends a command; returns the reply as text (an array's items joined by spaces).
    fn call(&mut self, args: &[&[u8]]) -> std::io::Result<String> {
        let mut out = Vec::with_capacity(64);
        write!(out, "*{}\r\n", args.len())?;
        for a in args {
            write!(out, "${}\r\n", a.len())?;
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)?;
        self.reply()
    }

    fn reply(&mut self) -> std::io::Result<String> {
        self.line.clear();
        self.reader.read_line(&mut self.line)?;
        let line = self.line.trim_end().to_owned();
        let rest = line.get(1..).unwrap_or("").to_owned();
        match line.as_bytes().first() {
            Some(b'-') => Err(std::io::Error::other(line)),
            Some(b'$') if rest == "-1" => Ok(String::new()),
            Some(b'$') => {
                let len: usize = rest.parse().map_err(std::io::Error::other)?;
                let mut data = vec![0u8; len + 2]; // and its CRLF
                self.reader.read_exact(&mut data)?;
                data.truncate(len);
                String::from_utf8(data).map_err(std::io::Error::other)
            }
            Some(b'*') => {
                let n: usize = rest.parse().unwrap_or(0);
                let items = (0..n)
                    .map(|_| self.reply())
                    .collect::<std::io::Result<Vec<_>>>()?;
                Ok(items.join(" "))
            }
            _ => Ok(rest),
        }
    }
}

/// (e): `clients` threads, each on its own connection, one reservation of one unit at a time.
pub fn run(c: &mut Criterion, clients: u64) {
    let name = format!("redis/hot_sku/{clients}");
    let Some(server) = Server::start(&clients.to_string()) else {
        println!("{name}: skipped, redis-server is not installed");
        return;
    };
    let mut admin = server.connect().expect("connect");
    let fsync = admin
        .call(&[b"CONFIG", b"GET", b"appendfsync"])
        .expect("config");
    assert_eq!(
        fsync, "appendfsync always",
        "every write fsynced before its reply"
    );
    admin
        .call(&[b"SET", b"HOT", HUGE_STOCK.to_string().as_bytes()])
        .expect("stock");
    let sha = admin
        .call(&[b"SCRIPT", b"LOAD", CHECK_AND_DECREMENT.as_bytes()])
        .expect("script");
    let conns: Vec<std::sync::Mutex<Conn>> = (0..clients)
        .map(|_| std::sync::Mutex::new(server.connect().expect("client connection")))
        .collect();
    let latencies = Arc::new(Latencies::default());
    let made = Arc::new(AtomicU64::new(0));
    let aof_before = aof_bytes(&server);
    let mut group = reservations_group(c, 8);
    group.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            let next = AtomicU64::new(0);
            let start = Instant::now();
            std::thread::scope(|scope| {
                for conn in &conns {
                    let (next, latencies, made, sha) = (&next, &latencies, &made, &sha);
                    scope.spawn(move || {
                        let mut conn = conn.lock().expect("connection");
                        while next.fetch_add(1, Ordering::Relaxed) < iters {
                            let began = Instant::now();
                            let taken = conn
                                .call(&[b"EVALSHA", sha.as_bytes(), b"1", b"HOT", b"1"])
                                .expect("evalsha");
                            assert_eq!(taken, "1", "the hot SKU has stock left");
                            made.fetch_add(1, Ordering::Relaxed);
                            latencies.record(began.elapsed());
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
    let left: i64 = admin
        .call(&[b"GET", b"HOT"])
        .expect("get")
        .parse()
        .expect("a number");
    assert_eq!(
        HUGE_STOCK - left,
        made.load(Ordering::Relaxed) as i64,
        "{name}: every reservation counted"
    );
    // Every reservation went through the append-only file: it grew by at least one DECRBY
    // (≥ 20 bytes) per reservation, and Redis saw no write error.
    let aof = aof_bytes(&server) - aof_before;
    let made = made.load(Ordering::Relaxed);
    assert!(
        aof >= made * 20,
        "{name}: the append-only file grew by {aof} bytes for {made} reservations"
    );
    let info = admin.call(&[b"INFO", b"persistence"]).expect("info");
    assert!(
        info.contains("aof_last_write_status:ok"),
        "{name}: Redis reports its writes ok: {info}"
    );
    println!(
        "{name}: {clients} connections, append-only file +{} KiB ({:.0} bytes per reservation), in {}",
        aof / 1024,
        aof as f64 / made.max(1) as f64,
        server.dir.display()
    );
    latencies.report(&name);
}

/// Bytes in the server's append-only files.
fn aof_bytes(server: &Server) -> u64 {
    std::fs::read_dir(server.dir.join("appendonlydir"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0)
}
