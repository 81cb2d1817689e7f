//! A pod backend that echoes: what a port-forward test sends through the tunnel comes back,
//! so the test proves the tunnel and nothing else.

use kubestrap_sandbox::{PodBackend, PodStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Echoes every byte sent to `port`; other ports refuse, as a container listening on one
/// port would.
pub struct EchoBackend {
    /// The one port that answers.
    pub port: u16,
}

#[async_trait::async_trait]
impl PodBackend for EchoBackend {
    async fn connect(&self, _ns: &str, _pod: &str, port: u16) -> Option<PodStream> {
        if port != self.port {
            return None;
        }
        let (a, mut b) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            loop {
                match b.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if b.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Some(Box::new(a))
    }
}
