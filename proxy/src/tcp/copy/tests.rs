use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::*;

/// A connected pair of loopback sockets: (the end the test drives, the end the copy owns).
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    (a, b)
}

#[tokio::test]
async fn copies_both_ways_and_passes_each_half_close_on() {
    let (mut client, mut down) = pair().await;
    let (mut up, mut server) = pair().await;
    let copy = tokio::spawn(async move { bidirectional(&mut down, &mut up, None).await });

    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap(); // client is done sending
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap(); // EOF arrives: the half-close was passed on
    assert_eq!(got, b"ping");

    // The other direction still works after the client's half-close.
    server.write_all(b"pong-after-fin").await.unwrap();
    server.shutdown().await.unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"pong-after-fin");

    let (t, end) = copy.await.unwrap();
    assert!(matches!(end, CopyEnd::Done), "{end:?}");
    assert_eq!(t.sent_upstream, 4);
    assert_eq!(t.sent_downstream, 14);
}

#[tokio::test]
async fn upstream_half_close_first_keeps_the_client_direction_open() {
    let (mut client, mut down) = pair().await;
    let (mut up, mut server) = pair().await;
    let copy = tokio::spawn(async move { bidirectional(&mut down, &mut up, None).await });

    server.write_all(b"banner").await.unwrap();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"banner");

    client.write_all(b"late request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut req = Vec::new();
    server.read_to_end(&mut req).await.unwrap();
    assert_eq!(req, b"late request");
    assert!(matches!(copy.await.unwrap().1, CopyEnd::Done));
}

#[tokio::test]
async fn idle_timeout_fires_only_after_silence() {
    let (mut client, mut down) = pair().await;
    let (mut up, mut server) = pair().await;
    let started = std::time::Instant::now();
    let copy = tokio::spawn(async move {
        bidirectional(&mut down, &mut up, Some(Duration::from_secs(1))).await
    });
    // Activity every 300ms keeps the connection alive well past one timeout period.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).await.unwrap();
    }
    assert!(!copy.is_finished(), "closed while bytes were flowing");
    let (_, end) = tokio::time::timeout(Duration::from_secs(5), copy)
        .await
        .expect("the idle timeout fires")
        .unwrap();
    assert!(matches!(end, CopyEnd::IdleTimeout), "{end:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn upstream_reset_is_reported_as_an_upstream_error() {
    let (mut client, mut down) = pair().await;
    let (mut up, server) = pair().await;
    let copy = tokio::spawn(async move { bidirectional(&mut down, &mut up, None).await });
    // Linger 0 makes close send RST.
    socket2::SockRef::from(&server)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(server);
    let (_, end) = copy.await.unwrap();
    assert!(matches!(end, CopyEnd::Error(Side::Upstream, _)), "{end:?}");
    let mut buf = [0u8; 1];
    // The copy dropped its end of the client connection.
    let n = client.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0);
}
