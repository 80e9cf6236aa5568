//! The floor: a byte relay on one event loop, one extra loopback hop and nothing else (no
//! HTTP, no credential: the client's own `authorization` goes through). What any proxy adds
//! over it is the proxy's own work; what it adds over a direct connection is the machine's
//! price for a hop (two more socket wake-ups, one more process to schedule).
//!
//! Run by the harness as a child process: `macro --relay LISTEN UPSTREAM`.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::{TcpListener, TcpStream};

pub fn main(listen: &str, upstream: &str) -> ExitCode {
    let (Ok(listen), Ok(upstream)) = (listen.parse::<SocketAddr>(), upstream.parse::<SocketAddr>())
    else {
        eprintln!("relay: usage: --relay LISTEN_ADDR UPSTREAM_ADDR");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("relay: cannot bind {listen}: {e}");
                return ExitCode::from(2);
            }
        };
        loop {
            let Ok((mut agent, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = agent.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut agent, &mut up).await;
            });
        }
    })
}
