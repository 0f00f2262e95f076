//! Network faults between cluster nodes: a TCP proxy in front of every node's cluster port.
//!
//! With `ClusterOptions::proxied`, each node listens on its real cluster port but advertises a proxy's port as its
//! `cluster_addr`, so every Raft RPC to it passes through [`FaultNet`]. The proxy learns which node opened a
//! connection from the kernel (the socket's owner process in `/proc`, whose working directory is the node's
//! directory), so it can cut links between pairs of nodes without any help from the nodes themselves.
//!
//! A cut link behaves like a real partition, not like a refused connection: bytes already in flight and new ones
//! are held, unanswered, so RPCs time out on both sides. When the link heals, held bytes flow again (late, as
//! delayed packets would), and whatever connections the nodes gave up on meanwhile are gone. Only the cluster
//! ports are proxied: client API traffic (and forwarding between API ports) is not cut.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An unordered pair of node indexes whose link is cut.
type Link = (usize, usize);

fn link(a: usize, b: usize) -> Link {
    (a.min(b), a.max(b))
}

/// The proxies of one cluster and the set of cut links.
pub struct FaultNet {
    cut: Arc<watch::Sender<BTreeSet<Link>>>,
    /// Node name (`node1`...) → index, to recognize senders.
    names: Arc<RwLock<HashMap<String, usize>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl FaultNet {
    /// No proxies yet.
    pub fn new() -> FaultNet {
        let (cut, _) = watch::channel(BTreeSet::new());
        FaultNet { cut: Arc::new(cut), names: Arc::default(), tasks: Vec::new() }
    }

    /// Starts the proxy of the next node (`name`, whose real cluster port is `upstream`); returns the proxy's port.
    /// Must run inside a multi-threaded tokio runtime, so proxies keep moving while the test blocks.
    pub fn add(&mut self, name: &str, upstream: u16) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = TcpListener::from_std(listener).expect("proxy listener");
        let index = self.tasks.len();
        self.names.write().expect("names").insert(name.to_string(), index);
        let (cut, names) = (self.cut.clone(), self.names.clone());
        self.tasks.push(tokio::spawn(accept_loop(listener, index, upstream, cut, names)));
        port
    }

    /// Cuts every link between a node in `a` and a node in `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        self.cut.send_modify(|cut| {
            for &x in a {
                for &y in b {
                    cut.insert(link(x, y));
                }
            }
        });
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&self, i: usize) {
        let others: Vec<usize> = (0..self.tasks.len()).filter(|j| *j != i).collect();
        self.partition(&[i], &others);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut.send_modify(|cut| cut.clear());
    }

    /// True if the link between `a` and `b` is cut now.
    pub fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.borrow().contains(&link(a, b))
    }
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    to: usize,
    upstream: u16,
    cut: Arc<watch::Sender<BTreeSet<Link>>>,
    names: Arc<RwLock<HashMap<String, usize>>>,
) {
    // Connections are tracked so that aborting the accept loop (on drop) ends them too.
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    struct AbortAll<'a>(&'a mut Vec<JoinHandle<()>>);
    impl Drop for AbortAll<'_> {
        fn drop(&mut self) {
            for c in self.0.iter() {
                c.abort();
            }
        }
    }
    let guard = AbortAll(&mut connections);
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let _ = client.set_nodelay(true);
        let (cut, names) = (cut.clone(), names.clone());
        guard.0.retain(|c| !c.is_finished());
        guard.0.push(tokio::spawn(async move {
            let (mut client_read, client_write) = client.into_split();
            let Some((from, head)) = sender(&mut client_read, &names).await else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
            let _ = server.set_nodelay(true);
            let (server_read, mut server_write) = server.into_split();
            let key = link(from, to);
            let rx = cut.subscribe();
            // The first request, already read, is held like any other bytes while the link is cut.
            let mut first = rx.clone();
            if first.wait_for(|cut| !cut.contains(&key)).await.is_err() || server_write.write_all(&head).await.is_err()
            {
                return;
            }
            let up = tokio::spawn(pump(client_read, server_write, key, rx.clone()));
            pump(server_read, client_write, key, rx).await;
            up.abort();
        }));
    }
}

/// Reads the first request head from a new connection and finds its sender in `x-vigil-from`; returns the sender's
/// index and the bytes read so far. `None` if the connection closes first or names no known node.
async fn sender(
    client: &mut tokio::net::tcp::OwnedReadHalf,
    names: &RwLock<HashMap<String, usize>>,
) -> Option<(usize, Vec<u8>)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return None;
        }
        let n = client.read(&mut buf).await.ok().filter(|n| *n > 0)?;
        head.extend_from_slice(&buf[..n]);
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let name = text.lines().find_map(|line| {
        let (header, value) = line.split_once(':')?;
        header.trim().eq_ignore_ascii_case("x-vigil-from").then(|| value.trim().to_string())
    });
    let index = name.as_ref().and_then(|name| names.read().ok()?.get(name).copied());
    if index.is_none() {
        eprintln!("fault proxy: dropped a connection whose first request named no known sender ({name:?})");
    }
    Some((index?, head))
}

/// Copies bytes from `from` to `to`, holding them while `key`'s link is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    key: Link,
    mut cut: watch::Receiver<BTreeSet<Link>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cut.wait_for(|cut| !cut.contains(&key)).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if cut.wait_for(|cut| !cut.contains(&key)).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
