//! Starting and stopping mocks.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_testkit::mock_upstream::{MockConfig, MockUpstream};
use tokio::net::TcpStream;

use crate::support::{azure_url, chat_body, post, start};

/// Mocks on port 0 get distinct ports and answer under their own names.
#[tokio::test]
async fn several_mocks_side_by_side() {
    let east = start(MockConfig::named("east")).await;
    let west = start(MockConfig::named("west")).await;
    assert_ne!(east.addr().port(), west.addr().port());
    assert_eq!(
        east.url(),
        format!("http://127.0.0.1:{}", east.addr().port())
    );
    for (mock, name) in [(&east, "east"), (&west, "west")] {
        let response = post(&azure_url(mock, "gpt-4o", "chat/completions"), &chat_body()).await;
        assert_eq!(
            response
                .headers()
                .get("x-mock-upstream")
                .and_then(|v| v.to_str().ok()),
            Some(name)
        );
    }
}

/// After shutdown the port refuses connections; dropping the handle stops the server too.
#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let mock = start(MockConfig::default()).await;
    let addr = mock.addr();
    mock.shutdown().await.expect("clean shutdown");
    assert!(TcpStream::connect(addr).await.is_err());

    let mock = start(MockConfig::default()).await;
    let addr = mock.addr();
    drop(mock);
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "dropped mock still accepts connections");
}

/// An unusable config is refused before binding.
#[tokio::test]
async fn refuses_an_unusable_config() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let error = MockUpstream::start(addr, MockConfig::default().tokens_per_second(0.0))
        .await
        .expect_err("zero tokens per second is refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    let error = MockUpstream::start(addr, MockConfig::named("bad\nname"))
        .await
        .expect_err("a name that cannot be a header is refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

/// The CLI entry point binds, serves and returns once its shutdown future resolves.
#[tokio::test]
async fn cli_run_stops_on_shutdown() {
    use clap::Parser;
    use sluice_testkit::mock_upstream::{MockUpstreamArgs, run};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockUpstreamArgs,
    }

    let cli =
        Cli::try_parse_from(["sluice", "--addr=127.0.0.1:0", "--name=cli"]).expect("flags parse");
    tokio::time::timeout(Duration::from_secs(5), run(cli.args, async {}))
        .await
        .expect("run returns after shutdown")
        .expect("run serves without error");
}
