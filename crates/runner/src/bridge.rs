//! The host's ends of a sandbox's bridges: the cap on connections to the host-side endpoints,
//! and the egress proxy, which lets model code reach the internet (HTTP `CONNECT`, and
//! plain-HTTP requests in absolute form) but never this host or its private networks.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// How many connections one model server may hold open to each of its host-side endpoints:
/// beyond this it waits, so a model cannot exhaust the server's descriptors.
pub const MAX_CONNECTIONS: usize = 256;

/// Serves the egress proxy on `listener` until the task is aborted.
pub fn egress(listener: UnixListener) -> JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Err(e) = proxy(conn).await {
                    tracing::debug!(error = %e, "egress proxy connection ended");
                }
                drop(permit);
            });
        }
    })
}

/// A listener that holds at most [`MAX_CONNECTIONS`] connections open at once.
pub struct Capped<L> {
    inner: L,
    slots: Arc<Semaphore>,
}

impl<L> Capped<L> {
    pub fn new(inner: L) -> Self {
        Capped {
            inner,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

impl<L: Listener> Listener for Capped<L> {
    type Io = CappedIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = loop {
            if let Ok(p) = self.slots.clone().acquire_owned().await {
                break p;
            }
        };
        let (io, addr) = self.inner.accept().await;
        (
            CappedIo {
                io,
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that gives its slot back when it closes.
pub struct CappedIo<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for CappedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CappedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

const MAX_HEAD: usize = 16 * 1024;

async fn proxy(mut client: UnixStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if head.len() > MAX_HEAD {
            return refuse(&mut client, "431 Request Header Fields Too Large", "").await;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_string();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    let (authority, rest) = if method.eq_ignore_ascii_case("CONNECT") {
        (target.to_string(), None)
    } else if let Some(r) = target.strip_prefix("http://") {
        let (auth, path) = r.split_at(r.find('/').unwrap_or(r.len()));
        let path = if path.is_empty() { "/" } else { path };
        (auth.to_string(), Some(path.to_string()))
    } else {
        return refuse(
            &mut client,
            "400 Bad Request",
            "modelyard's egress proxy takes CONNECT or an absolute http:// URL\n",
        )
        .await;
    };
    let (host, port) = split_authority(&authority, if rest.is_some() { 80 } else { 443 });
    let upstream = match connect_public(&host, port).await {
        Ok(s) => s,
        Err(why) => return refuse(&mut client, "403 Forbidden", &format!("{why}\n")).await,
    };
    let mut upstream = upstream;
    match rest {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            upstream.write_all(&head[end..]).await?;
        }
        Some(path) => {
            // One request per connection: the next one may be for another host.
            let mut out = format!("{method} {path} {version}\r\n");
            for l in lines.filter(|l| !l.is_empty()) {
                let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
                if !matches!(
                    name.as_str(),
                    "proxy-connection" | "connection" | "keep-alive"
                ) && !name.starts_with("proxy-")
                {
                    out.push_str(l);
                    out.push_str("\r\n");
                }
            }
            out.push_str("Connection: close\r\n\r\n");
            upstream.write_all(out.as_bytes()).await?;
            upstream.write_all(&head[end..]).await?;
        }
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

async fn refuse(client: &mut UnixStream, status: &str, body: &str) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(msg.as_bytes()).await
}

fn split_authority(authority: &str, default_port: u16) -> (String, u16) {
    if let Some(r) = authority.strip_prefix('[') {
        if let Some((h, p)) = r.split_once(']') {
            let port = p.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h.to_string(), port.unwrap_or(default_port));
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(default_port)),
        _ => (authority.to_string(), default_port),
    }
}

/// Connects to `host:port` only if every address it resolves to is a public one: the name is
/// resolved once and the checked address is the one connected to.
async fn connect_public(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} ({}) is on this host or a private network, which model code may not reach",
            bad.ip()
        ));
    }
    let mut last = String::new();
    for a in addrs {
        match tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(a)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
    }
    Err(format!("cannot connect to {host}:{port}: {last}"))
}

/// Whether model code may connect to this address: not this host's own addresses or networks,
/// loopback, private, shared, link-local (cloud metadata), multicast or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if host_networks().iter().any(|n| n.contains(ip)) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy)]
struct Net(IpAddr, u8);

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.0, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.1)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.1)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// This host's own addresses and the networks it is directly on, read once from /proc.
fn host_networks() -> &'static [Net] {
    static NETS: OnceLock<Vec<Net>> = OnceLock::new();
    NETS.get_or_init(|| {
        let mut nets = Vec::new();
        // Own IPv4 addresses: the "/32 host LOCAL" leaves of the local routing table.
        let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
        let mut last: Option<Ipv4Addr> = None;
        for line in trie.lines() {
            let t = line.trim_start_matches([' ', '|', '+', '-', '`']);
            if let Ok(a) = t.trim().parse::<Ipv4Addr>() {
                last = Some(a);
            } else if t.contains("/32 host LOCAL") {
                if let Some(a) = last {
                    nets.push(Net(IpAddr::V4(a), 32));
                }
            }
        }
        // Directly connected IPv4 networks (routes without a gateway).
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        for line in routes.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[2] != "00000000" {
                continue;
            }
            // The file holds addresses in the host's byte order.
            let parse = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
            if let (Some(dst), Some(mask)) = (parse(f[1]), parse(f[7])) {
                let bits: u32 = mask.iter().map(|b| b.count_ones()).sum();
                if bits != 0 {
                    nets.push(Net(IpAddr::V4(Ipv4Addr::from(dst)), bits as u8));
                }
            }
        }
        // Own IPv6 addresses.
        let v6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
        for line in v6.lines() {
            if let Some(hex) = line.split_whitespace().next() {
                if let Ok(n) = u128::from_str_radix(hex, 16) {
                    nets.push(Net(IpAddr::V6(Ipv6Addr::from(n)), 128));
                }
            }
        }
        nets
    })
}

/// Removes a Unix socket file left by an earlier run, then binds it, usable by the sandbox
/// user.
pub fn bind_unix(path: &Path, uid: u32, gid: u32) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_reachable() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        assert!(is_public("1.1.1.1".parse().unwrap()));
        assert!(is_public("2606:4700::1111".parse().unwrap()));
    }

    #[test]
    fn networks_contain_their_addresses() {
        let n = Net("192.0.2.0".parse().unwrap(), 24);
        assert!(n.contains("192.0.2.77".parse().unwrap()));
        assert!(!n.contains("192.0.3.1".parse().unwrap()));
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            split_authority("pypi.org:443", 80),
            ("pypi.org".into(), 443)
        );
        assert_eq!(split_authority("pypi.org", 80), ("pypi.org".into(), 80));
        assert_eq!(split_authority("[::1]:8080", 80), ("::1".into(), 8080));
    }
}
