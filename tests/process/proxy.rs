//! A TCP forwarder in front of a real server, which a test can take down and bring back on the
//! same port: while it is down, connections are refused and the open ones are cut, as when the
//! server behind it crashes or the network to it fails. The servers themselves stay real.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub port: u16,
    up: watch::Sender<bool>,
    stop: CancellationToken,
}

impl Proxy {
    /// Starts forwarding 127.0.0.1:<free port> to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> Self {
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = listener.local_addr().expect("bound");
        let (up, mut state) = watch::channel(true);
        let stop = CancellationToken::new();
        let task_stop = stop.clone();
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                // One "up" period: accept and forward until told to go down.
                let period = task_stop.child_token();
                let accepting = listener.take().expect("a listener while up");
                loop {
                    tokio::select! {
                        _ = task_stop.cancelled() => return,
                        changed = state.changed() => {
                            if changed.is_err() { return; }
                            if !*state.borrow() { break; }
                        }
                        accepted = accepting.accept() => {
                            let Ok((inbound, _)) = accepted else { continue };
                            tokio::spawn(forward(inbound, target, period.clone()));
                        }
                    }
                }
                // Down: the port refuses connections and every forwarded one is cut.
                drop(accepting);
                period.cancel();
                loop {
                    tokio::select! {
                        _ = task_stop.cancelled() => return,
                        changed = state.changed() => {
                            if changed.is_err() { return; }
                            if *state.borrow() { break; }
                        }
                    }
                }
                listener = Some(bind(addr));
            }
        });
        Self {
            port: addr.port(),
            up,
            stop,
        }
    }

    pub fn down(&self) {
        self.up.send_replace(false);
    }

    pub fn up(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    // Rebinding the port just given up needs SO_REUSEADDR (its old connections sit in TIME_WAIT).
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("the proxy port is free");
    socket.listen(1024).expect("listening")
}

async fn forward(mut inbound: TcpStream, target: SocketAddr, cut: CancellationToken) {
    let Ok(Ok(mut outbound)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = cut.cancelled() => {
            // A reset rather than a polite close, as a crash would leave it.
            let _ = inbound.set_zero_linger();
            let _ = outbound.set_zero_linger();
        }
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
    }
}
