//! The service under hostile conditions, in-process on 127.0.0.x: an access log that cannot be
//! written (fail closed, then recover with every line and the chain intact; or fail open and
//! record the outage), request bodies that are too large, stall or lie about their length,
//! slow clients over the connection caps while a normal client is served, and requests hyper
//! rejects before routing, counted in `/metrics`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use vigil::serve::access_log::{ACCESS_LOG, AccessRecord, OUTAGE_ID, WriteFault};
use vigil::serve::audit::verify_dir;
use vigil::serve::edge::{EdgeLimits, Rejection};
use vigil::serve::keys::{KeyFile, NewKey, Scope, key_file_path};
use vigil::serve::{ServeConfig, Server};
use vigil::store::RunStore;

/// A store with one trained digits-logreg run, trained once and copied per test.
fn trained() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        common::trained_logreg(&RunStore::new(dir.path()), 1);
        dir
    })
    .path()
}

/// A copy of the trained store with a key holding `scopes`; returns the store and the key.
fn store_with_key(scopes: &[Scope]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let run = RunStore::new(trained()).list().remove(0).id;
    let from = trained().join(run.as_str());
    let to = dir.path().join(run.as_str());
    copy_tree(&from, &to);
    let path = key_file_path(dir.path());
    let mut file = KeyFile::load(&path).unwrap();
    let new = NewKey {
        name: "k".into(),
        scopes: scopes.to_vec(),
        expires_in: None,
        rate: None,
        budget: None,
        output: "full".parse().unwrap(),
        guard: Default::default(),
        generate: Default::default(),
    };
    let (_, key) = file.create(new, time::OffsetDateTime::now_utc()).unwrap();
    file.save(&path).unwrap();
    (dir, key)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn config(store: &Path) -> ServeConfig {
    let mut c = ServeConfig::new(store, vec!["latest".into()]);
    c.addr = "127.0.0.1:0".parse().unwrap();
    c
}

fn client() -> reqwest::Client {
    vigil::serve::server::install_crypto();
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

fn body() -> String {
    json!({"inputs": [vec![0.0f32; 64]]}).to_string()
}

async fn predict(c: &reqwest::Client, s: &Server, key: &str) -> (u16, serde_json::Value) {
    let r = c
        .post(format!("{}/v1/models/digits-logreg/predict", s.url()))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(serde_json::Value::Null))
}

async fn healthz(c: &reqwest::Client, s: &Server) -> u16 {
    c.get(format!("{}/healthz", s.url())).send().await.unwrap().status().as_u16()
}

async fn wait_for_health(c: &reqwest::Client, s: &Server, status: u16) {
    let t0 = Instant::now();
    while healthz(c, s).await != status {
        assert!(t0.elapsed() < Duration::from_secs(10), "/healthz never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics(c: &reqwest::Client, s: &Server, key: &str) -> String {
    c.get(format!("{}/metrics", s.url())).bearer_auth(key).send().await.unwrap().text().await.unwrap()
}

fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn log_lines(store: &Path) -> Vec<AccessRecord> {
    let text = std::fs::read_to_string(store.join(ACCESS_LOG)).unwrap();
    text.lines().map(|l| serde_json::from_str(l).expect("every line is whole")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_log_fails_closed_and_recovers_with_every_line_and_the_chain() {
    let (dir, key) = store_with_key(&[Scope::Predict, Scope::Admin]);
    let fault = Arc::new(WriteFault::default());
    let mut cfg = config(dir.path());
    cfg.log_fault = Some(fault.clone());
    let server = Server::start(cfg).await.unwrap();
    let c = client();
    assert_eq!(predict(&c, &server, &key).await.0, 200);

    // The disk fills: the next line cannot be written (half of it reaches the file first).
    fault.set(true);
    // Answered before the writer found out (200), or refused if a pending line (the first
    // request's, or a metrics scrape's) already hit the fault: which one is a matter of timing.
    let (first, _) = predict(&c, &server, &key).await;
    assert!(first == 200 || first == 503, "{first}");
    wait_for_health(&c, &server, 503).await;
    let mut refused = i64::from(first == 503);
    for _ in 0..3 {
        let (status, reply) = predict(&c, &server, &key).await;
        assert_eq!(status, 503);
        let why = reply["error"].as_str().unwrap();
        assert!(why.starts_with("the service cannot write its access log ("), "{why}");
        assert!(why.contains("No space left on device"), "{why}");
        refused += 1;
    }
    let m = metrics(&c, &server, &key).await;
    assert_eq!(metric(&m, "vigil_access_log_writable"), 0);
    assert_eq!(metric(&m, "vigil_access_log_refused"), refused);
    assert_eq!(server.health().log_refused, refused as u64);
    assert!(server.health().log_error.is_some());

    // Space returns: the service resumes by itself.
    fault.set(false);
    wait_for_health(&c, &server, 200).await;
    assert_eq!(predict(&c, &server, &key).await.0, 200);
    assert_eq!(server.health().log_error, None);
    server.shutdown().await.unwrap();

    let lines = log_lines(dir.path());
    assert_eq!(lines.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=lines.len() as u64).collect::<Vec<_>>());
    let outage: Vec<&AccessRecord> = lines.iter().filter(|r| r.request_id == OUTAGE_ID).collect();
    assert_eq!(outage.len(), 1, "one outage, one line");
    let what = outage[0].error.as_deref().unwrap();
    assert!(what.contains(&format!("{refused} requests were refused with 503")), "{what}");
    // Every prediction answered 200 is there, and the scrapes made while the log failed.
    let served = lines.iter().filter(|r| r.route.as_deref() == Some("/v1/models/{name}/predict")).count();
    assert_eq!(served, if first == 200 { 3 } else { 2 });
    let report = verify_dir(dir.path()).unwrap();
    assert_eq!(report.finding, None, "the chain is intact");
    assert_eq!(report.lines, lines.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_serves_through_the_outage_and_logs_it_afterwards() {
    let (dir, key) = store_with_key(&[Scope::Predict]);
    let fault = Arc::new(WriteFault::default());
    let mut cfg = config(dir.path());
    cfg.log_fault = Some(fault.clone());
    cfg.log_fail_open = true;
    let server = Server::start(cfg).await.unwrap();
    let c = client();
    fault.set(true);
    for _ in 0..4 {
        assert_eq!(predict(&c, &server, &key).await.0, 200);
    }
    wait_for_health(&c, &server, 503).await;
    assert!(server.health().log_fail_open);
    assert_eq!(predict(&c, &server, &key).await.0, 200, "fail-open keeps serving");
    fault.set(false);
    wait_for_health(&c, &server, 200).await;
    server.shutdown().await.unwrap();
    let lines = log_lines(dir.path());
    // The lines waited in memory and went out in order, then the outage's line.
    let predict = Some("/v1/models/{name}/predict");
    assert_eq!(lines.iter().filter(|r| r.status == 200 && r.route.as_deref() == predict).count(), 5);
    let outage = lines.iter().find(|r| r.request_id == OUTAGE_ID).expect("the outage is logged");
    assert!(outage.error.as_deref().unwrap().contains("0 requests were answered without a line"));
    assert_eq!(verify_dir(dir.path()).unwrap().finding, None);
}

/// Writes `head` (and `then` after it), and returns what the server answers within `wait`.
async fn raw(addr: SocketAddr, head: Vec<u8>, wait: Duration) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&head).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_too_large_stalled_or_short_get_413_and_408_with_the_reason() {
    let (dir, key) = store_with_key(&[Scope::Predict]);
    let mut cfg = config(dir.path());
    cfg.limits.body_timeout = Duration::from_millis(800);
    let server = Server::start(cfg).await.unwrap();
    let c = client();
    let url = format!("{}/v1/models/digits-logreg/predict", server.url());

    // 20 MB announced by Content-Length and sent: a 413 with the reason, not a reset.
    let big = vec![b' '; 20 * 1000 * 1000];
    let r = c.post(&url).bearer_auth(&key).header("content-type", "application/json").body(big).send().await;
    let r = r.expect("the client reads the answer instead of a reset");
    assert_eq!(r.status().as_u16(), 413);
    let why: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(why["error"].as_str().unwrap().contains("larger than the service's limit of 1048576 bytes"));

    let head = |extra: &str| {
        format!(
            "POST /v1/models/digits-logreg/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\n{extra}\r\n"
        )
        .into_bytes()
    };
    // Announced too large, and the client waits to be told to continue: 413 before it sends.
    let (answer, _) = raw(
        server.addr(),
        head("Content-Length: 20000000\r\nExpect: 100-continue\r\n"),
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A Content-Length larger than what is sent, then silence: 408 after the body timeout, well
    // before the 10 s request timeout.
    let mut short = head("Content-Length: 500\r\n");
    short.extend_from_slice(br#"{"inputs": [[0, 0"#);
    let (answer, took) = raw(server.addr(), short, Duration::from_secs(8)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the body did not arrive within 800 ms (17 bytes of the 500 announced came)"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A huge chunk size with a few bytes of it: 408 too.
    let mut chunked = head("Transfer-Encoding: chunked\r\n");
    chunked.extend_from_slice(b"fffffff\r\n{\"inputs\"");
    let (answer, _) = raw(server.addr(), chunked, Duration::from_secs(8)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.shutdown().await.unwrap();

    let lines = log_lines(dir.path());
    let statuses: Vec<u16> = lines.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![413, 413, 408, 408], "each is logged with its status");
    assert_eq!(lines[2].bytes_in, 17);
}

/// A connection from `from` that sends half a request head and then nothing.
async fn slowloris(from: &str, to: SocketAddr) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(format!("{from}:0").parse().unwrap()).ok()?;
    let mut s = socket.connect(to).await.ok()?;
    s.write_all(b"POST /v1/models/digits-logreg/predict HTTP/1.1\r\nHost: x\r\n").await.ok()?;
    Some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_capped_and_dropped_while_a_normal_client_is_served() {
    let (dir, key) = store_with_key(&[Scope::Predict, Scope::Admin]);
    let mut cfg = config(dir.path());
    cfg.edge =
        EdgeLimits { max_connections: 256, max_per_client: 16, header_timeout: Duration::from_secs(2) };
    let server = Server::start(cfg).await.unwrap();
    let c = client();
    // Warm the normal client's connection, then 200 slow connections from another address.
    assert_eq!(predict(&c, &server, &key).await.0, 200);
    let mut slow = Vec::new();
    for _ in 0..200 {
        slow.push(slowloris("127.0.0.2", server.addr()).await);
    }
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        assert_eq!(predict(&c, &server, &key).await.0, 200);
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    let edge = server.edge_stats();
    // The slow ones' 16, and the normal client's (its pool may hold two).
    assert!(edge.open() <= 16 + 2, "{} connections open", edge.open());
    assert!(edge.count(Rejection::ClientCap) >= 200 - 16, "{}", edge.count(Rejection::ClientCap));
    // Not a speed target: only that slow clients did not hold the normal one up for seconds.
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?} beside 200 slow clients");

    // Past the header timeout the slow ones are dropped and counted.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(edge.count(Rejection::SlowHeaders) >= 16, "{}", edge.count(Rejection::SlowHeaders));
    assert!(edge.open() <= 2, "{} open after the header timeout", edge.open());
    drop(slow);

    // Requests hyper rejects before routing are counted, by kind.
    let (bad, _) = raw(server.addr(), b"GARBAGE\r\n\r\n".to_vec(), Duration::from_secs(3)).await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes();
    let (answer, _) = raw(server.addr(), long, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    let huge =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(2 << 20)).into_bytes();
    let (answer, _) = raw(server.addr(), huge, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = metrics(&c, &server, &key).await;
    assert_eq!(metric(&m, r#"vigil_rejected_before_routing{reason="bad_request"}"#), 1);
    assert_eq!(metric(&m, r#"vigil_rejected_before_routing{reason="uri_too_long"}"#), 1);
    assert_eq!(metric(&m, r#"vigil_rejected_before_routing{reason="headers_too_large"}"#), 1);
    assert!(metric(&m, r#"vigil_rejected_before_routing{reason="client_cap"}"#) >= 184);
    let report = edge.report().unwrap();
    assert!(report.contains("1 malformed requests (400)"), "{report}");
    assert_eq!(server.health().rejected, edge.rejected_requests());
    server.shutdown().await.unwrap();
}

#[test]
fn the_service_view_shows_an_unwritable_log_and_what_was_turned_away() {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use vigil::engine::service::ServiceEvent;
    use vigil::serve::server::Health;
    use vigil::tui::app::Msg;
    let mut app = common::app();
    app.update(Msg::ServiceFeed(Box::new(common::service_feed())));
    app.update(Msg::Service(ServiceEvent::Started {
        url: "http://127.0.0.1:7878".into(),
        run: "digits-mlp-d4e5f6".into(),
        models: vec!["digits-mlp 42c45ce85347".into()],
        warnings: vec![],
    }));
    app.update(Msg::Key(KeyEvent::new(KeyCode::Char('8'), KeyModifiers::NONE)));
    let screen = |app: &mut vigil::tui::app::App| common::text(&common::render(app, 100, 30));
    assert!(!screen(&mut app).contains("turned away"), "nothing to say while all is well");
    let failing = Health {
        log_error: Some("access.jsonl: No space left on device".into()),
        log_refused: 12,
        ..Health::default()
    };
    app.update(Msg::Service(ServiceEvent::Health(failing)));
    assert!(screen(&mut app).contains("log unwritable: 503 (12 refused)"), "{}", screen(&mut app));
    app.update(Msg::Service(ServiceEvent::Health(Health {
        rejected: 7,
        refused_connections: 3,
        ..Health::default()
    })));
    let text = screen(&mut app);
    assert!(!text.contains("log unwritable"), "{text}");
    assert!(text.contains("turned away 7 requests  3 conns"), "{text}");
}
