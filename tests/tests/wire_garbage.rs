//! Hostile bytes on the raw socket: random data, absurd length prefixes,
//! truncated messages, unknown protocol versions. The server may reject
//! them however it likes (an ErrorResponse, a hang-up) but it must not hang
//! on to the connection forever, must not crash, and must keep serving
//! well-behaved clients. Also, at the end, how replies to well-formed
//! extended-protocol messages are sent.

use std::io::ErrorKind;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use eddy_tests::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the server may take to reject a broken client.
const REJECT_WITHIN: Duration = Duration::from_secs(10);

const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

fn normal_startup() -> Vec<u8> {
    startup_packet(PROTOCOL_3_0, &[("user", "eddy"), ("database", "eddy")])
}

/// A typed frontend message: type byte, length (including itself), body.
fn message(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn query_message(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

async fn connect(server: &TestServer) -> Result<TcpStream> {
    TcpStream::connect(server.addr())
        .await
        .context("TCP connect to eddy")
}

/// Writes, ignoring errors: the server may already have hung up on us.
async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
}

/// Reads one backend message; `None` at EOF.
async fn read_message(stream: &mut TcpStream) -> Result<Option<(u8, Vec<u8>)>> {
    let read = async {
        let mut header = [0u8; 5];
        match stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e).context("read message header"),
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if !(4..=(64 << 20)).contains(&len) {
            bail!(
                "backend message {:?} with bad length {len}",
                header[0] as char
            );
        }
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).await.context("read body")?;
        Ok(Some((header[0], body)))
    };
    tokio::time::timeout(REJECT_WITHIN, read)
        .await
        .context("no backend message within the time limit")?
}

/// The `M` (message) field of an ErrorResponse body.
fn error_message(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find(|f| f.first() == Some(&b'M'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}

/// Startup through ReadyForQuery, as a client with no password.
async fn handshake(stream: &mut TcpStream) -> Result<()> {
    send(stream, &normal_startup()).await;
    loop {
        let (ty, body) = read_message(stream)
            .await?
            .context("server closed the connection during startup")?;
        match ty {
            b'R' => {
                let code = body
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if code != Some(0) {
                    bail!("server asked for authentication ({code:?}); expected none");
                }
            }
            b'E' => bail!("startup failed: {}", error_message(&body)),
            b'Z' => return Ok(()),
            _ => {} // ParameterStatus, BackendKeyData, NoticeResponse
        }
    }
}

/// What the server did with a broken client within [`REJECT_WITHIN`].
struct Outcome {
    bytes: Vec<u8>,
    closed: bool,
}

impl Outcome {
    /// Rejected: hung up, or at least sent an ErrorResponse.
    fn rejected(&self) -> bool {
        self.closed || self.bytes.first() == Some(&b'E')
    }
}

async fn outcome(stream: &mut TcpStream) -> Outcome {
    let mut bytes = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                // A reset is a hang-up too: the server closed with our
                // unread garbage still in its buffer.
                Err(_) => return,
            }
        }
    };
    let closed = tokio::time::timeout(REJECT_WITHIN, read_all).await.is_ok();
    Outcome { bytes, closed }
}

async fn assert_closed(stream: &mut TcpStream, what: &str) {
    let out = outcome(stream).await;
    assert!(
        out.closed,
        "{what}: server kept the connection open for {REJECT_WITHIN:?} (got {} bytes)",
        out.bytes.len()
    );
}

async fn assert_rejected(stream: &mut TcpStream, what: &str) {
    let out = outcome(stream).await;
    assert!(
        out.rejected(),
        "{what}: server neither hung up nor sent an ErrorResponse within {REJECT_WITHIN:?} \
         (got {:?})",
        &out.bytes[..out.bytes.len().min(64)]
    );
}

/// Fails naming `what` if the server has panicked so far.
fn assert_no_panic(server: &TestServer, what: &str) {
    let stderr = server.stderr();
    assert!(
        !stderr.contains("panicked"),
        "server panicked after {what}:\n{stderr}"
    );
}

/// The server still serves a normal client, did not exit and did not panic.
async fn assert_alive(server: &mut TestServer) -> Result<()> {
    assert_eq!(server.try_exit_status(), None, "server exited");
    let client = server.connect().await?;
    let one: i32 = client.query_one("SELECT CAST(1 AS INT)", &[]).await?.get(0);
    assert_eq!(one, 1);
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "server panicked:\n{stderr}");
    Ok(())
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test]
async fn random_bytes_before_startup() -> Result<()> {
    let mut server = TestServer::start()?;
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for (i, len) in [1usize, 3, 4, 7, 8, 9, 64, 4096, 65_536]
        .into_iter()
        .enumerate()
    {
        let mut stream = connect(&server).await?;
        send(&mut stream, &rng.bytes(len)).await;
        // Half-close: whatever length the garbage claimed, no more is coming.
        let _ = stream.shutdown().await;
        assert_closed(&mut stream, &format!("random garbage #{i} ({len} bytes)")).await;
    }
    assert_alive(&mut server).await
}

#[tokio::test]
async fn random_bytes_after_startup() -> Result<()> {
    let mut server = TestServer::start()?;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for (i, len) in [1usize, 5, 6, 100, 4096, 65_536].into_iter().enumerate() {
        let mut stream = connect(&server).await?;
        handshake(&mut stream).await?;
        send(&mut stream, &rng.bytes(len)).await;
        let _ = stream.shutdown().await;
        assert_closed(&mut stream, &format!("garbage after startup #{i}")).await;
    }
    assert_alive(&mut server).await
}

/// Well-formed frontend traffic (startup, the simple and extended query
/// messages, a password message, COPY data) changed at random: each
/// connection gets an answer or a hang-up, never a hang, and the server
/// goes on. `EDDY_FUZZ_ITERATIONS` sets how many connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_frontend_messages() -> Result<()> {
    let mut server = TestServer::start()?;
    let mut traffic = normal_startup();
    traffic.extend(query_message("SELECT 1; SELECT 'x'"));
    traffic.extend(extended_exchange("SELECT $1::int"));
    traffic.extend(message(b'D', b"S\0"));
    traffic.extend(message(b'C', b"Pname\0"));
    traffic.extend(message(b'H', b""));
    traffic.extend(message(b'p', b"SCRAM-SHA-256\0\0\0\0\x03n,,"));
    traffic.extend(message(b'd', b"1\t2\n"));
    traffic.extend(message(b'c', b""));
    traffic.extend(message(b'X', b""));
    let seeds = [traffic.clone(), traffic[normal_startup().len()..].to_vec()];
    let mut mutator = eddy_storage::fuzz::Mutator::from_env(41);
    let connections = eddy_storage::fuzz::iterations(300);
    for i in 0..connections {
        let seed = &seeds[i % 2];
        let mut bytes = mutator.mutate(seed);
        if i % 2 == 1 {
            let mut with_startup = normal_startup();
            with_startup.extend(bytes);
            bytes = with_startup;
        }
        let mut stream = connect(&server).await?;
        send(&mut stream, &bytes).await;
        let _ = stream.shutdown().await;
        assert_closed(&mut stream, &format!("mutated traffic #{i}: {bytes:?}")).await;
        if i % 50 == 49 {
            assert_alive(&mut server).await?;
        }
    }
    assert_no_panic(&server, "mutated traffic");
    assert_alive(&mut server).await
}

#[tokio::test]
async fn oversized_length_prefixes() -> Result<()> {
    let mut server = TestServer::start()?;

    // A startup packet claiming 1 GiB. Postgres refuses any startup packet
    // over 10 000 bytes at once; the server must not wait for (or allocate)
    // the rest.
    let mut stream = connect(&server).await?;
    let mut packet = (1u32 << 30).to_be_bytes().to_vec();
    packet.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    packet.extend_from_slice(b"user\0eddy\0");
    send(&mut stream, &packet).await;
    assert_rejected(&mut stream, "startup packet claiming 1 GiB").await;

    // Same after startup: a Query claiming ~2 GiB.
    let mut stream = connect(&server).await?;
    handshake(&mut stream).await?;
    let mut msg = vec![b'Q'];
    msg.extend_from_slice(&0x7fff_fff0u32.to_be_bytes());
    msg.extend_from_slice(b"SELECT 1");
    send(&mut stream, &msg).await;
    assert_rejected(&mut stream, "Query claiming 2 GiB").await;

    // Lengths too small to be valid (a length counts its own 4 bytes).
    for len in [0u32, 1, 3] {
        let mut stream = connect(&server).await?;
        send(&mut stream, &len.to_be_bytes()).await;
        send(&mut stream, &PROTOCOL_3_0.to_be_bytes()).await;
        assert_rejected(&mut stream, &format!("startup length {len}")).await;

        // After startup, be lenient about how (Postgres says "invalid
        // message length"), but the server must not crash or hang on.
        let mut stream = connect(&server).await?;
        handshake(&mut stream).await?;
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(b"SELECT 1\0");
        send(&mut stream, &msg).await;
        let _ = stream.shutdown().await;
        assert_closed(&mut stream, &format!("Query length {len}")).await;
        assert_no_panic(&server, &format!("Query length {len}"));
    }
    // A negative length (as i32).
    let mut stream = connect(&server).await?;
    handshake(&mut stream).await?;
    let mut msg = vec![b'Q'];
    msg.extend_from_slice(&u32::MAX.to_be_bytes());
    send(&mut stream, &msg).await;
    assert_rejected(&mut stream, "Query length -1").await;

    assert_alive(&mut server).await
}

#[tokio::test]
async fn truncated_messages() -> Result<()> {
    let mut server = TestServer::start()?;

    // Startup header promises 100 bytes; 20 arrive, then EOF.
    let mut stream = connect(&server).await?;
    let mut packet = 100u32.to_be_bytes().to_vec();
    packet.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    packet.extend_from_slice(b"user\0eddy\0da");
    send(&mut stream, &packet).await;
    let _ = stream.shutdown().await;
    assert_closed(&mut stream, "truncated startup packet").await;

    // Only part of the 4-byte length.
    let mut stream = connect(&server).await?;
    send(&mut stream, &[0, 0]).await;
    let _ = stream.shutdown().await;
    assert_closed(&mut stream, "truncated startup length").await;

    // After startup: a Query whose body stops short, then EOF.
    let mut stream = connect(&server).await?;
    handshake(&mut stream).await?;
    let mut msg = vec![b'Q'];
    msg.extend_from_slice(&1000u32.to_be_bytes());
    msg.extend_from_slice(b"SELECT 1");
    send(&mut stream, &msg).await;
    let _ = stream.shutdown().await;
    assert_closed(&mut stream, "truncated Query").await;

    // A Query without its terminating NUL, and a Parse with missing fields:
    // complete frames with malformed bodies.
    for (name, frame) in [
        ("Query without NUL", message(b'Q', b"SELECT 1")),
        ("Parse without fields", message(b'P', b"")),
        ("Bind to nothing", message(b'B', b"\0\0\xff\xff")),
        ("Execute without portal", message(b'E', b"")),
        ("unknown message type", message(b'y', b"hello")),
    ] {
        let mut stream = connect(&server).await?;
        handshake(&mut stream).await?;
        send(&mut stream, &frame).await;
        // A Sync so a server that answers with an error has a point to
        // resume at; either way it must answer or hang up.
        send(&mut stream, &message(b'S', b"")).await;
        let out = outcome(&mut stream).await;
        // Malformed frames get Postgres's protocol_violation, then a close.
        let answer = String::from_utf8_lossy(&out.bytes);
        assert!(
            out.closed && out.bytes.first() == Some(&b'E') && answer.contains("C08P01"),
            "{name}: expected an 08P01 ErrorResponse and a close, got {answer:?}"
        );
        assert_no_panic(&server, name);
    }

    assert_alive(&mut server).await
}

#[tokio::test]
async fn bad_protocol_versions() -> Result<()> {
    let mut server = TestServer::start()?;
    for (name, version) in [
        ("protocol 2.0", 2u32 << 16),
        ("protocol 4.0", 4 << 16),
        ("protocol 0.0", 0),
        ("version 1234", 1234),
        ("version u32::MAX", u32::MAX),
    ] {
        let mut stream = connect(&server).await?;
        send(
            &mut stream,
            &startup_packet(version, &[("user", "eddy"), ("database", "eddy")]),
        )
        .await;
        assert_rejected(&mut stream, name).await;
    }
    assert_alive(&mut server).await
}

#[tokio::test]
async fn ssl_request_is_declined_then_startup_works() -> Result<()> {
    // psql's default sslmode=prefer sends SSLRequest first; without TLS the
    // server answers 'N' and the client goes on in plain text.
    let mut server = TestServer::start()?;
    let mut stream = connect(&server).await?;
    let mut req = 8u32.to_be_bytes().to_vec();
    req.extend_from_slice(&SSL_REQUEST.to_be_bytes());
    send(&mut stream, &req).await;
    let mut answer = [0u8; 1];
    tokio::time::timeout(REJECT_WITHIN, stream.read_exact(&mut answer))
        .await
        .context("no answer to SSLRequest")??;
    assert_eq!(answer[0], b'N', "plain-text server should decline SSL");

    handshake(&mut stream).await?;
    send(&mut stream, &query_message("SELECT 1")).await;
    let mut types = Vec::new();
    loop {
        let (ty, body) = read_message(&mut stream)
            .await?
            .context("closed during query")?;
        if ty == b'E' {
            bail!("SELECT 1 failed: {}", error_message(&body));
        }
        types.push(ty);
        if ty == b'Z' {
            break;
        }
    }
    // RowDescription, DataRow, CommandComplete, ReadyForQuery.
    assert_eq!(types, b"TDCZ".to_vec());
    // Terminate, then the server hangs up.
    send(&mut stream, &message(b'X', b"")).await;
    assert_closed(&mut stream, "after Terminate").await;
    assert_alive(&mut server).await
}

#[tokio::test]
async fn gssenc_request_is_declined() -> Result<()> {
    // libpq sends GSSENCRequest first when it has Kerberos credentials.
    let mut server = TestServer::start()?;
    let mut stream = connect(&server).await?;
    let mut req = 8u32.to_be_bytes().to_vec();
    req.extend_from_slice(&GSSENC_REQUEST.to_be_bytes());
    send(&mut stream, &req).await;
    let mut answer = [0u8; 1];
    tokio::time::timeout(REJECT_WITHIN, stream.read_exact(&mut answer))
        .await
        .context("no answer to GSSENCRequest")??;
    assert_eq!(answer[0], b'N', "server should decline GSS encryption");
    handshake(&mut stream).await?;
    assert_alive(&mut server).await
}

#[tokio::test]
async fn many_connections_dropped_without_a_word() -> Result<()> {
    let mut server = TestServer::start()?;
    for _ in 0..200 {
        drop(connect(&server).await?);
    }
    // Some that send half a startup and vanish.
    for _ in 0..50 {
        let mut stream = connect(&server).await?;
        send(&mut stream, &normal_startup()[..6]).await;
    }
    assert_alive(&mut server).await
}

/// The `C` (SQLSTATE) field of an ErrorResponse body.
fn error_code(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find(|f| f.first() == Some(&b'C'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}

/// Execute or Describe of a portal that does not exist: Postgres's 34000,
/// and the connection goes on.
#[tokio::test]
async fn missing_portals_are_34000() -> Result<()> {
    let server = TestServer::start()?;
    let mut stream = connect(&server).await?;
    handshake(&mut stream).await?;
    let execute = message(b'E', b"nope\0\0\0\0\0");
    let describe = message(b'D', b"Pnope\0");
    for (what, request) in [("Execute", execute), ("Describe", describe)] {
        send(&mut stream, &request).await;
        send(&mut stream, &message(b'S', b"")).await;
        let (ty, body) = read_message(&mut stream)
            .await?
            .context("the server hung up")?;
        assert_eq!(ty, b'E', "{what}: expected an ErrorResponse");
        assert_eq!(
            error_code(&body),
            "34000",
            "{what}: {}",
            error_message(&body)
        );
        assert!(
            error_message(&body).contains("\"nope\""),
            "{what}: {}",
            error_message(&body)
        );
        let (ty, _) = read_message(&mut stream)
            .await?
            .context("the server hung up")?;
        assert_eq!(ty, b'Z', "{what}: expected ReadyForQuery");
    }
    Ok(())
}

/// Parse, Bind, Execute and Sync of a one-row query, as drivers pipeline
/// them in one packet.
fn extended_exchange(sql: &str) -> Vec<u8> {
    let mut parse = b"\0".to_vec();
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(b"\0\0\0");
    let mut bytes = message(b'P', &parse);
    bytes.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    bytes.extend(message(b'E', b"\0\0\0\0\0"));
    bytes.extend(message(b'S', b""));
    bytes
}

/// The types of the whole backend messages at the start of `bytes`.
fn message_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 5) {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if at + 1 + len > bytes.len() {
            break;
        }
        types.push(header[0]);
        at += 1 + len;
    }
    types
}

/// The replies to an extended-protocol exchange are held until its Sync
/// and sent together, as Postgres sends them: one read gets them all.
#[tokio::test]
async fn replies_before_sync_go_out_together() -> Result<()> {
    let server = TestServer::start()?;
    let mut stream = connect(&server).await?;
    handshake(&mut stream).await?;
    for _ in 0..20 {
        send(&mut stream, &extended_exchange("SELECT 1")).await;
        let mut buf = vec![0u8; 64 * 1024];
        let read = tokio::time::timeout(REJECT_WITHIN, stream.read(&mut buf))
            .await
            .context("no reply")??;
        // ParseComplete, BindComplete, DataRow, CommandComplete, ReadyForQuery.
        assert_eq!(message_types(&buf[..read]), b"12DCZ".to_vec());
    }
    Ok(())
}

/// Flush sends what is held without waiting for Sync, as drivers that
/// describe a statement before they bind it rely on.
#[tokio::test]
async fn flush_sends_replies_before_sync() -> Result<()> {
    let server = TestServer::start()?;
    let mut stream = connect(&server).await?;
    handshake(&mut stream).await?;
    let mut request = message(b'P', b"s\0SELECT 1 AS one\0\0\0");
    request.extend(message(b'D', b"Ss\0"));
    request.extend(message(b'H', b""));
    send(&mut stream, &request).await;
    let mut types = Vec::new();
    for _ in 0..3 {
        let (ty, _) = read_message(&mut stream)
            .await?
            .context("the server hung up")?;
        types.push(ty);
    }
    // ParseComplete, ParameterDescription, RowDescription.
    assert_eq!(types, b"1tT".to_vec());
    send(&mut stream, &message(b'S', b"")).await;
    let (ty, _) = read_message(&mut stream)
        .await?
        .context("the server hung up")?;
    assert_eq!(ty, b'Z');
    Ok(())
}
