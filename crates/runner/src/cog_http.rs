//! Requests to one Cog server, over a TCP connection of this process's own.
//!
//! A confined server listens on the loopback of its sandbox's network namespace, which this
//! process cannot reach. The wrapper inside (`wrapper.py --hand`) accepts on a Unix socket in the
//! server's directory, connects to the Cog server, and hands that connected socket over
//! (`SCM_RIGHTS`): from then on this process talks to Cog directly, with no process copying
//! the bytes in between (a copying bridge in Python cost about 100 µs of CPU per prediction,
//! and two more hops of latency). An unconfined server is reached over TCP as usual.
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// How to send requests to one Cog server.
#[derive(Clone)]
pub struct CogClient {
    http: Client<Connect, Full<Bytes>>,
    /// What its URLs start with, e.g. `http://127.0.0.1:5000`.
    pub base: Arc<str>,
}

/// A Cog server's answer, read whole (Cog's answers are one JSON document).
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl CogClient {
    /// A server listening on this host's `127.0.0.1:port`.
    pub fn tcp(port: u16) -> Self {
        CogClient::new(Connect::Tcp, format!("http://127.0.0.1:{port}"))
    }

    /// A confined server whose wrapper hands out connections on the Unix socket at `path`.
    pub fn handed(path: &Path) -> Self {
        // The host name is never resolved: every connection comes from the socket.
        CogClient::new(Connect::Handed(path.into()), "http://cog".into())
    }

    fn new(connect: Connect, base: String) -> Self {
        CogClient {
            http: Client::builder(TokioExecutor::new())
                // A Cog server serves one prediction at a time; one or two idle connections are
                // all that is ever reused.
                .pool_max_idle_per_host(4)
                .build(connect),
            base: base.into(),
        }
    }

    /// `method url` with `body` as JSON (and `Prefer: prefer`), answered within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        prefer: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Answer, String> {
        let mut req = Request::builder().method(method).uri(url);
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(p) = prefer {
            req = req.header("Prefer", p);
        }
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| e.to_string())?),
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(Answer { status, body })
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| format!("no answer within {} s", t.as_secs_f64()))?,
            None => exchange.await,
        }
    }

    pub async fn post(&self, url: &str, body: Option<&Value>) -> Result<Answer, String> {
        self.send(Method::POST, url, body, None, None).await
    }
}

/// Where connections come from.
#[derive(Clone)]
enum Connect {
    Tcp,
    Handed(Arc<Path>),
}

impl tower_service::Service<Uri> for Connect {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connect = self.clone();
        Box::pin(async move {
            let tcp = match connect {
                Connect::Tcp => {
                    let host = uri.host().unwrap_or("127.0.0.1").to_string();
                    TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await?
                }
                Connect::Handed(path) => handed(&path).await?,
            };
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tcp))
        })
    }
}

/// A connection to the Cog server, handed over by the sandbox's wrapper.
async fn handed(path: &Path) -> io::Result<TcpStream> {
    let unix = UnixStream::connect(path).await?;
    let fd = loop {
        unix.readable().await?;
        match unix.try_io(Interest::READABLE, || receive_fd(&unix)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => break r?,
        }
    };
    let tcp = std::net::TcpStream::from(fd);
    // What comes from the sandbox is checked, not trusted: a connected TCP socket on its
    // loopback, or nothing.
    match tcp.peer_addr() {
        Ok(a) if a.ip().is_loopback() => {}
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the sandbox handed over something other than a loopback TCP connection",
            ))
        }
    }
    tcp.set_nonblocking(true)?;
    TcpStream::from_std(tcp)
}

fn receive_fd(unix: &UnixStream) -> io::Result<OwnedFd> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut byte = [0u8; 1];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    recvmsg(
        unix,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    // The wrapper closes the socket without a connection when Cog does not listen (yet).
    Err(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "the model server is not accepting connections",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd;

    /// A wrapper stand-in: answers one connection on `path` by handing over `fd` (or nothing).
    fn hander(path: &Path, fd: Option<OwnedFd>) -> std::thread::JoinHandle<()> {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            if let Some(fd) = fd {
                let mut space =
                    [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                let fds = [fd.as_fd()];
                assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
                sendmsg(
                    &conn,
                    &[io::IoSlice::new(b"c")],
                    &mut control,
                    SendFlags::empty(),
                )
                .unwrap();
            }
        })
    }

    #[tokio::test]
    async fn a_handed_connection_is_used_only_if_it_is_loopback_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let cog = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_cog = std::net::TcpStream::connect(cog.local_addr().unwrap()).unwrap();
        let sock = dir.path().join("cog.sock");
        let t = hander(&sock, Some(OwnedFd::from(to_cog)));
        let tcp = handed(&sock).await.unwrap();
        assert_eq!(tcp.peer_addr().unwrap(), cog.local_addr().unwrap());
        t.join().unwrap();

        // Anything else (here a file) is refused.
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let sock = dir.path().join("file.sock");
        let t = hander(&sock, Some(OwnedFd::from(file)));
        let e = handed(&sock).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        t.join().unwrap();

        // Nothing handed: the server is not listening yet.
        let sock = dir.path().join("none.sock");
        let t = hander(&sock, None);
        let e = handed(&sock).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        t.join().unwrap();
    }
}
