//! A server running on the test's runtime: stopped gracefully on request, aborted on drop.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Spawns `serve`, handing it the future that resolves when the test asks it to stop.
    pub fn spawn<Fut>(serve: impl FnOnce(Shutdown) -> Fut) -> Self
    where
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(Box::pin(async {
            let _ = stopped.await;
        })));
        Self {
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Asks the server to stop: it stops accepting and drains in-flight requests.
    pub fn begin_stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Stops the server and waits until it has, asserting it ended cleanly.
    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The HTTP client tests talk to servers with.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}
