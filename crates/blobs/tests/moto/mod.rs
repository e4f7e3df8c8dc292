//! A real S3-compatible store for tests: moto's server on a free loopback port, with a bucket,
//! stopped when dropped. The AWS variables that name it are set while a test builds its store
//! (`with_env`), under one lock, since the environment is the process's.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
}

static ENV: Mutex<()> = Mutex::new(());

/// moto's server in a process that also ends when the test process does (its parent changes),
/// so a store kept for a whole test binary, or one whose test panicked, is never left behind.
const WATCHED: &str = "
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(['-H', '127.0.0.1', '-p', sys.argv[1]])
";

impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-c", WATCHED, &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto's server (scripts/setup.sh installs moto[server])");
        let m = Moto { child, port };
        let until = Instant::now() + Duration::from_secs(30);
        while m.request("GET", "/").is_none() {
            assert!(Instant::now() < until, "moto did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    /// One store for every test of this test binary, with the AWS variables naming it set for
    /// good: for binaries whose tests build stores at the same time.
    #[allow(dead_code)]
    pub fn shared() -> &'static Moto {
        static SHARED: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let m = Moto::start();
            m.with_env(|| ());
            m
        })
    }

    /// A plain HTTP request (moto takes unsigned ones); the status.
    pub fn request(&self, method: &str, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split(' ').nth(1)?.parse().ok()
    }

    /// A new bucket; its `s3://` URL with `prefix`.
    pub fn bucket(&self, name: &str, prefix: &str) -> String {
        assert_eq!(self.request("PUT", &format!("/{name}")), Some(200));
        format!("s3://{name}/{prefix}")
    }

    /// Runs `f` with the AWS variables naming this store set.
    pub fn with_env<T>(&self, f: impl FnOnce() -> T) -> T {
        let _one = ENV.lock().unwrap_or_else(|p| p.into_inner());
        std::env::set_var(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", self.port),
        );
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
        f()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
