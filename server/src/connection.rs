//! One client connection: pgwire's message loop, over a stream that checks
//! every frontend message before pgwire decodes it. pgwire 0.41 reads some
//! message bodies (Parse, Bind, Execute, ...) without bounds checks and
//! panics on a short one; here a malformed message closes the connection
//! with an error instead.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::data::{FieldDescription, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{BindComplete, CloseComplete, ParseComplete};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{
    negotiate_tls, process_error, process_message, MaybeTls, PgWireMessageServerCodec,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use crate::engine::Engine;
use crate::error::EddyError;
use crate::handler::push::PushQuery;
use crate::handler::set::time_limit;
use crate::handler::{cursor, push};
use crate::login::Login;
use crate::wire::Handlers;

/// How long a client may take to start up, as pgwire allows.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client cut off for falling behind gets to take the error.
const SLOW_CLIENT_GOODBYE: Duration = Duration::from_secs(1);

/// Serves one client until it leaves or sends something malformed. A
/// `refused` client (one past `--max-connections`) is told so at startup
/// and let go; a cancel request on such a connection is still served.
pub async fn serve(tcp: TcpStream, handlers: &Handlers, refused: bool) -> io::Result<()> {
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    let engine = handlers.engine();
    let mut pushes = ExtendedPushes::default();
    // A message the client sent while a push query ran, read next.
    let mut pending = None;

    let policy = handlers.login_policy();
    let mut login = Login::default();

    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    // pgwire answers an SSLRequest, with TLS when the server has a
    // certificate, and leaves the rest.
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        negotiated = negotiate_tls(tcp, handlers.tls()) => negotiated?,
    };
    let Some(framed) = negotiated else {
        return Ok(());
    };
    let parts = framed.into_parts();
    let mut checked = CheckedStream::new(parts.io);
    // Bytes pgwire read ahead are checked like the rest.
    checked.checker.scan(&parts.read_buf)?;
    let mut new_parts = FramedParts::new(checked, parts.codec);
    new_parts.read_buf = parts.read_buf;
    new_parts.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(new_parts);
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    // The session's cursors go when the connection does, however it ends.
    let session = Session::start();
    socket
        .metadata_mut()
        .insert(cursor::SESSION_KEY.into(), session.0.to_string());

    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let message = if let Some(message) = pending.take() {
            Some(Ok(message))
        } else if starting {
            tokio::select! {
                _ = &mut startup_timeout => None,
                message = socket.next() => message,
            }
        } else {
            match idle_limit(&socket) {
                Some((limit, ending)) => match tokio::time::timeout(limit, socket.next()).await {
                    Ok(message) => message,
                    Err(_) => {
                        fatal(&mut socket, ending).await;
                        return Ok(());
                    }
                },
                None => socket.next().await,
            }
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                // Say why before hanging up, as Postgres does.
                let info = ErrorInfo::new("FATAL".into(), "08P01".into(), e.to_string());
                let _ = socket
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await;
                return Err(e.into());
            }
            None => return Ok(()),
        };
        // The client leaves: close, so clients that wait for it go on.
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        if refused && matches!(message, PgWireFrontendMessage::Startup(_)) {
            fatal(&mut socket, EddyError::TooManyConnections).await;
            return Ok(());
        }
        // Logging in is Eddy's; a failed login ends the connection.
        let message = match message {
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                match login.answer(&mut socket, policy, password).await {
                    Ok(()) => continue,
                    Err(error) => {
                        tracing::info!(peer = %socket.socket_addr(), %error, "login refused");
                        fatal(&mut socket, error).await;
                        return Ok(());
                    }
                }
            }
            message => message,
        };
        let logging_in = match message {
            PgWireFrontendMessage::Startup(ref startup)
                if matches!(login, Login::AwaitingStartup) =>
            {
                Some(login.start(&mut socket, policy, engine, startup).await)
            }
            PgWireFrontendMessage::CancelRequest(_) | PgWireFrontendMessage::SslNegotiation(_) => {
                None
            }
            _ if !matches!(login, Login::Done) => Some(Err(EddyError::ProtocolViolation(
                "expected a startup or password message".into(),
            ))),
            _ => None,
        };
        match logging_in {
            Some(Ok(())) => continue,
            Some(Err(error)) => {
                tracing::info!(peer = %socket.socket_addr(), %error, "login refused");
                fatal(&mut socket, error).await;
                return Ok(());
            }
            None => {}
        }
        // A push query streams until it ends, outside pgwire's loop.
        let message = match message {
            PgWireFrontendMessage::Query(query) => match push::parse(&query.query) {
                Some(push) => {
                    let mut synced = false;
                    let result = match push {
                        Ok(push) => {
                            let protocol = push::Protocol::Simple;
                            push::serve(
                                &mut socket,
                                engine,
                                push,
                                &protocol,
                                &mut synced,
                                &mut pending,
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    match push_ended(&mut socket, &errors, result, None).await? {
                        Some(()) => continue,
                        None => return Ok(()),
                    }
                }
                None => PgWireFrontendMessage::Query(query),
            },
            message if !matches!(socket.state(), PgWireConnectionState::AwaitingSync) => {
                match pushes
                    .take(message, &mut socket, engine, &mut pending)
                    .await?
                {
                    Taken::Pass(message) => message,
                    Taken::Answered => continue,
                    Taken::Ran { result, synced } => {
                        match push_ended(&mut socket, &errors, result, Some(synced)).await? {
                            Some(()) => continue,
                            None => return Ok(()),
                        }
                    }
                    Taken::Failed(e) => {
                        let mut e = e.into_pgwire();
                        errors.on_error(&socket, &mut e);
                        process_error(&mut socket, e, true).await?;
                        continue;
                    }
                }
            }
            message => message,
        };
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        // Replies before Sync (or Flush) go out together, at Sync.
        socket.get_mut().corked = matches!(
            message,
            PgWireFrontendMessage::Parse(_)
                | PgWireFrontendMessage::Bind(_)
                | PgWireFrontendMessage::Describe(_)
                | PgWireFrontendMessage::Execute(_)
                | PgWireFrontendMessage::Close(_)
        );
        // A statement runs at most the session's statement_timeout,
        // sending its rows included; a simple query's statements share it.
        let timeout = match message {
            PgWireFrontendMessage::Query(_) | PgWireFrontendMessage::Execute(_) => {
                time_limit(socket.metadata(), "statement_timeout")
            }
            _ => None,
        };
        let run = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        );
        let result = match timeout {
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .unwrap_or_else(|_| Err(EddyError::StatementTimeout.into_pgwire())),
            None => run.await,
        };
        if let Err(mut e) = result {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended_query).await?;
        }
        socket.get_mut().corked = false;
    }
}

/// How long a client that is ready for a query may send nothing, and the
/// error that ends its connection then: `idle_in_transaction_session_timeout`
/// in a transaction block, `idle_session_timeout` outside one.
fn idle_limit<S, ST>(
    socket: &Framed<S, PgWireMessageServerCodec<ST>>,
) -> Option<(Duration, EddyError)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    if !matches!(socket.state(), PgWireConnectionState::ReadyForQuery) {
        return None;
    }
    match socket.transaction_status() {
        TransactionStatus::Idle => time_limit(socket.metadata(), "idle_session_timeout")
            .map(|limit| (limit, EddyError::IdleSessionTimeout)),
        _ => time_limit(socket.metadata(), "idle_in_transaction_session_timeout")
            .map(|limit| (limit, EddyError::IdleInTransactionTimeout)),
    }
}

/// Sends `error` as FATAL, as Postgres does before it closes a connection.
async fn fatal<S, ST>(socket: &mut Framed<S, PgWireMessageServerCodec<ST>>, error: EddyError)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let info = ErrorInfo::new("FATAL".into(), error.sqlstate().into(), error.to_string());
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await;
}

/// What a push query's end means for the connection: `Some` to go on,
/// `None` to close it. `synced`: in the extended protocol, whether the
/// client's Sync came while the query ran (it is owed ReadyForQuery).
async fn push_ended<S, ST, E>(
    socket: &mut Framed<S, PgWireMessageServerCodec<ST>>,
    errors: &Arc<E>,
    result: Result<push::Ended, EddyError>,
    synced: Option<bool>,
) -> io::Result<Option<()>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    E: ErrorHandler,
{
    // After an error the extended protocol waits for Sync, unless it came.
    let wait_for_sync = synced == Some(false);
    match result {
        Ok(push::Ended::Complete) => Ok(Some(())),
        Ok(push::Ended::Disconnected) => Ok(None),
        Ok(push::Ended::TooSlow) => {
            tracing::warn!("closing a connection whose push query fell behind");
            // Say why if the socket takes it, then hang up.
            let mut e = EddyError::ClientTooSlow.into_pgwire();
            errors.on_error(socket, &mut e);
            let said = process_error(socket, e, wait_for_sync);
            let _ = tokio::time::timeout(SLOW_CLIENT_GOODBYE, said).await;
            Ok(None)
        }
        Err(e) => {
            let mut e = e.into_pgwire();
            errors.on_error(socket, &mut e);
            process_error(socket, e, wait_for_sync).await?;
            Ok(Some(()))
        }
    }
}

/// The statements and portals of a connection that are push queries, in
/// the extended protocol. pgwire never sees them: a push query streams
/// until it ends, which pgwire's Execute cannot.
#[derive(Default)]
struct ExtendedPushes {
    statements: HashMap<String, PushQuery>,
    /// Each portal's query and the formats Bind asked for its columns.
    portals: HashMap<String, (PushQuery, Format)>,
    /// Portals executed with a row limit: their queries run on between
    /// Executes, their rows queued until fetched.
    running: HashMap<String, Running>,
    /// Portals whose query completed: executing one again completes with
    /// no rows, as in Postgres, until it is bound again or closed.
    exhausted: std::collections::HashSet<String>,
}

/// A push query portal fetched some rows at a time.
struct Running {
    schema: datafusion::arrow::datatypes::SchemaRef,
    feed: cursor::Feed,
    rows: std::collections::VecDeque<datafusion::arrow::array::RecordBatch>,
    sent: usize,
}

/// What became of a message [`ExtendedPushes`] saw.
enum Taken {
    /// Not a push query's: pgwire handles it.
    Pass(PgWireFrontendMessage),
    Answered,
    /// A push query ran; see [`push_ended`].
    Ran {
        result: Result<push::Ended, EddyError>,
        synced: bool,
    },
    /// Refused: the client gets the error, and the protocol waits for Sync.
    Failed(EddyError),
}

impl ExtendedPushes {
    async fn take<S, ST>(
        &mut self,
        message: PgWireFrontendMessage,
        socket: &mut Framed<S, PgWireMessageServerCodec<ST>>,
        engine: &Engine,
        pending: &mut Option<PgWireFrontendMessage>,
    ) -> io::Result<Taken>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    {
        match message {
            PgWireFrontendMessage::Parse(parse) => {
                let name = parse.name.clone().unwrap_or_default();
                match push::parse(&parse.query) {
                    None => {
                        self.statements.remove(&name);
                        Ok(Taken::Pass(PgWireFrontendMessage::Parse(parse)))
                    }
                    Some(Err(e)) => Ok(Taken::Failed(e)),
                    Some(Ok(push)) if push.is_copy() => Ok(Taken::Failed(EddyError::Unsupported(
                        "COPY (SUBSCRIBE ...) in the extended query protocol (send it as a \
                         simple query, as psql does)"
                            .into(),
                    ))),
                    Some(Ok(push)) => {
                        self.statements.insert(name, push);
                        let complete = PgWireBackendMessage::ParseComplete(ParseComplete::new());
                        socket.send(complete).await?;
                        Ok(Taken::Answered)
                    }
                }
            }
            PgWireFrontendMessage::Bind(bind) => {
                let portal = bind.portal_name.clone().unwrap_or_default();
                let statement = bind.statement_name.clone().unwrap_or_default();
                let Some(push) = self.statements.get(&statement) else {
                    self.running.remove(&portal);
                    self.portals.remove(&portal);
                    return Ok(Taken::Pass(PgWireFrontendMessage::Bind(bind)));
                };
                if !bind.parameters.is_empty() {
                    return Ok(Taken::Failed(EddyError::Unsupported(
                        "parameters in a push query".into(),
                    )));
                }
                let format = result_format(&bind.result_column_format_codes);
                self.running.remove(&portal);
                self.exhausted.remove(&portal);
                self.portals.insert(portal, (push.clone(), format));
                socket
                    .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
                    .await?;
                Ok(Taken::Answered)
            }
            PgWireFrontendMessage::Describe(describe) => {
                let name = describe.name.clone().unwrap_or_default();
                let found = match describe.target_type {
                    b'S' => self
                        .statements
                        .get(&name)
                        .map(|push| (push, Format::UnifiedText, true)),
                    _ => self
                        .portals
                        .get(&name)
                        .map(|(push, format)| (push, format.clone(), false)),
                };
                let Some((push, format, statement)) = found else {
                    return Ok(Taken::Pass(PgWireFrontendMessage::Describe(describe)));
                };
                let fields = match push.describe(engine).await.and_then(|schema| {
                    crate::wire::pg_fields(&schema, &format, None).map_err(EddyError::from)
                }) {
                    Ok(fields) => fields,
                    Err(e) => return Ok(Taken::Failed(e)),
                };
                if statement {
                    let none = ParameterDescription::new(Vec::new());
                    socket
                        .feed(PgWireBackendMessage::ParameterDescription(none))
                        .await?;
                }
                let description =
                    RowDescription::new(fields.iter().map(FieldDescription::from).collect());
                socket
                    .send(PgWireBackendMessage::RowDescription(description))
                    .await?;
                Ok(Taken::Answered)
            }
            PgWireFrontendMessage::Execute(execute) => {
                let name = execute.name.clone().unwrap_or_default();
                let Some((push, format)) = self.portals.get(&name).cloned() else {
                    return Ok(Taken::Pass(PgWireFrontendMessage::Execute(execute)));
                };
                if self.exhausted.contains(&name) {
                    let tag = pgwire::api::results::Tag::new("SELECT").with_rows(0);
                    socket
                        .send(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                    return Ok(Taken::Answered);
                }
                if execute.max_rows > 0 {
                    let max_rows = execute.max_rows as usize;
                    return self
                        .fetch(name, push, format, max_rows, socket, engine)
                        .await;
                }
                self.running.remove(&name);
                let protocol = push::Protocol::Extended { format };
                let mut synced = false;
                let result =
                    push::serve(socket, engine, push, &protocol, &mut synced, pending).await;
                if matches!(result, Ok(push::Ended::Complete)) {
                    self.exhausted.insert(name);
                }
                Ok(Taken::Ran { result, synced })
            }
            PgWireFrontendMessage::Close(close) => {
                let name = close.name.clone().unwrap_or_default();
                let removed = match close.target_type {
                    b'S' => self.statements.remove(&name).is_some(),
                    _ => {
                        self.running.remove(&name);
                        self.exhausted.remove(&name);
                        self.portals.remove(&name).is_some()
                    }
                };
                if !removed {
                    return Ok(Taken::Pass(PgWireFrontendMessage::Close(close)));
                }
                socket
                    .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
                    .await?;
                Ok(Taken::Answered)
            }
            other => Ok(Taken::Pass(other)),
        }
    }

    /// An Execute with a row limit on a push query portal (drivers' fetch
    /// size): the first starts the query, which runs on between Executes;
    /// each sends up to `max_rows` rows, waiting for them, then
    /// PortalSuspended, or CommandComplete once the query's LIMIT is met.
    async fn fetch<S, ST>(
        &mut self,
        name: String,
        push: PushQuery,
        format: Format,
        max_rows: usize,
        socket: &mut Framed<S, PgWireMessageServerCodec<ST>>,
        engine: &Engine,
    ) -> io::Result<Taken>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    {
        let cancel = push::cancel_receiver(socket).await;
        if !self.running.contains_key(&name) {
            match push.start_feed(engine, socket.metadata()).await {
                Ok((schema, feed)) => {
                    let running = Running {
                        schema,
                        feed,
                        rows: Default::default(),
                        sent: 0,
                    };
                    self.running.insert(name.clone(), running);
                }
                Err(e) => return Ok(Taken::Failed(e)),
            }
        }
        let Some(running) = self.running.get_mut(&name) else {
            return Ok(Taken::Failed(EddyError::Internal(
                "a fetched push query is gone".into(),
            )));
        };
        let filled = tokio::select! {
            filled = running.feed.fill(&running.schema, &mut running.rows, max_rows, None) => filled,
            () = push::canceled(cancel) => Err(EddyError::Canceled),
        };
        let fields = filled.and_then(|()| {
            crate::wire::pg_fields(&running.schema, &format, None).map_err(EddyError::from)
        });
        let fields = match fields {
            Ok(fields) => Arc::new(fields),
            Err(e) => {
                self.running.remove(&name);
                return Ok(Taken::Failed(e));
            }
        };
        for batch in cursor::take_rows(&mut running.rows, Some(max_rows)) {
            for row in crate::wire::encode_rows(batch, &fields, &format) {
                match row {
                    Ok(row) => {
                        running.sent += 1;
                        socket.feed(PgWireBackendMessage::DataRow(row)).await?;
                    }
                    Err(e) => {
                        self.running.remove(&name);
                        return Ok(Taken::Failed(EddyError::PushFailed(e.to_string())));
                    }
                }
            }
        }
        if running.feed.ended() && running.rows.is_empty() {
            let tag = pgwire::api::results::Tag::new("SELECT").with_rows(running.sent);
            self.running.remove(&name);
            self.exhausted.insert(name);
            socket
                .send(PgWireBackendMessage::CommandComplete(tag.into()))
                .await?;
        } else {
            socket
                .send(PgWireBackendMessage::PortalSuspended(
                    pgwire::messages::extendedquery::PortalSuspended::new(),
                ))
                .await?;
        }
        Ok(Taken::Answered)
    }
}

/// The formats Bind asks for result columns, as Postgres reads its codes:
/// none is text, one is every column's.
fn result_format(codes: &[i16]) -> Format {
    match codes {
        [] => Format::UnifiedText,
        [code] => Format::from(*code),
        codes => Format::Individual(codes.to_vec()),
    }
}

/// A connection's session, ended on drop.
struct Session(u64);

impl Session {
    fn start() -> Self {
        Session(cursor::start_session())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        cursor::end_session(self.0);
    }
}

/// Backend bytes a corked stream holds at most before it writes them.
const HELD_LIMIT: usize = 64 * 1024;

/// A TCP stream whose bytes pass through a [`FrameChecker`] as they are
/// read. While corked it holds back what is written, as Postgres sends an
/// extended-protocol exchange's replies at Sync in one write instead of one
/// write per message; it sends them before it waits to read.
struct CheckedStream {
    tcp: MaybeTls,
    checker: FrameChecker,
    corked: bool,
    held: Vec<u8>,
}

impl CheckedStream {
    fn new(tcp: MaybeTls) -> Self {
        CheckedStream {
            tcp,
            checker: FrameChecker::default(),
            corked: false,
            held: Vec::new(),
        }
    }

    /// Writes what is held back.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let written = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.held))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for CheckedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The client may wait for these before it sends more. A full socket
        // leaves them held; its readiness wakes this task as well.
        if let Poll::Ready(Err(e)) = this.poll_release(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                Poll::Ready(this.checker.scan(read))
            }
            other => other,
        }
    }
}

impl AsyncWrite for CheckedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Joined to what is held, so that both go in one write.
        if (this.corked || !this.held.is_empty()) && this.held.len() + buf.len() <= HELD_LIMIT {
            this.held.extend_from_slice(buf);
            if !this.corked {
                if let Poll::Ready(Err(e)) = this.poll_release(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            return Poll::Ready(Ok(buf.len()));
        }
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.corked {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Follows the frontend byte stream frame by frame: untyped startup
/// packets first, then typed messages, whose bodies it checks for the
/// types pgwire decodes without bounds checks.
#[derive(Debug, Default)]
struct FrameChecker {
    /// Past the startup packet: messages start with a type byte.
    typed: bool,
    /// The header of the frame being read: type byte (if typed) and length.
    header: Vec<u8>,
    /// Body bytes still to come in the frame being read.
    remaining: usize,
    /// The body so far, kept for the types that are checked.
    body: Option<Vec<u8>>,
}

/// Codes of startup packets after which another untyped packet follows.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// Message types whose bodies are checked. pgwire decodes each message
/// from the shared read buffer, so a body it reads short or long would
/// shift every later message: bodies must match their layout exactly.
fn checked_kind(kind: u8) -> bool {
    matches!(
        kind,
        b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'H' | b'X' | b'c' | b'f'
    )
}

/// Checks an untyped packet's body (after its code) against its layout:
/// nothing for SSL and GSS requests, a process id and key for a cancel,
/// and NUL-terminated name/value pairs ending in an empty name otherwise.
fn check_startup(code: u32, rest: &[u8]) -> io::Result<()> {
    match code {
        SSL_REQUEST | GSSENC_REQUEST if rest.is_empty() => Ok(()),
        CANCEL_REQUEST if rest.len() == 8 => Ok(()),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            Err(malformed("a request packet of the wrong length"))
        }
        _ => {
            let mut body = Body(rest);
            loop {
                let name = body.cstring("startup parameters without their terminator")?;
                if name == 0 {
                    break;
                }
                body.cstring("a startup parameter without a value")?;
            }
            body.end("startup packet")
        }
    }
}

impl FrameChecker {
    fn header_len(&self) -> usize {
        if self.typed {
            5
        } else {
            4
        }
    }

    /// Advances over `bytes`; an error names the first malformed message.
    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.remaining == 0 && self.header.len() < self.header_len() {
                let take = (self.header_len() - self.header.len()).min(bytes.len());
                self.header.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.header.len() == self.header_len() {
                    self.start_body()?;
                }
                continue;
            }
            let take = self.remaining.min(bytes.len());
            if let Some(body) = &mut self.body {
                body.extend_from_slice(&bytes[..take]);
            }
            self.remaining -= take;
            bytes = &bytes[take..];
            if self.remaining == 0 {
                self.finish_frame()?;
            }
        }
        Ok(())
    }

    fn start_body(&mut self) -> io::Result<()> {
        let at = self.header_len() - 4;
        let length = u32::from_be_bytes([
            self.header[at],
            self.header[at + 1],
            self.header[at + 2],
            self.header[at + 3],
        ]) as usize;
        if length < 4 {
            return Err(malformed("a message length below 4"));
        }
        self.remaining = length - 4;
        let keep = !self.typed || checked_kind(self.header[0]);
        self.body = keep.then(Vec::new);
        if self.remaining == 0 {
            self.finish_frame()?;
        }
        Ok(())
    }

    fn finish_frame(&mut self) -> io::Result<()> {
        let body = self.body.take().unwrap_or_default();
        if self.typed {
            check_body(self.header[0], &body)?;
        } else {
            let code = body
                .get(..4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .ok_or_else(|| malformed("a startup packet without a code"))?;
            check_startup(code, &body[4..])?;
            // After an SSL or GSS request the client sends another startup
            // packet; after the startup packet, typed messages.
            self.typed = !matches!(code, SSL_REQUEST | GSSENC_REQUEST);
        }
        self.header.clear();
        Ok(())
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed frontend message: {what}"),
    )
}

/// Reads the parts of a message body, failing on a short one.
struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn take(&mut self, n: usize, what: &str) -> io::Result<()> {
        if self.0.len() < n {
            return Err(malformed(what));
        }
        self.0 = &self.0[n..];
        Ok(())
    }

    /// A NUL-terminated string; returns its length.
    fn cstring(&mut self, what: &str) -> io::Result<usize> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(what))?;
        self.0 = &self.0[end + 1..];
        Ok(end)
    }

    /// An unsigned 16-bit count.
    fn count(&mut self, what: &str) -> io::Result<usize> {
        let part = self.0.get(..2).ok_or_else(|| malformed(what))?;
        let value = u16::from_be_bytes([part[0], part[1]]);
        self.0 = &self.0[2..];
        Ok(value as usize)
    }

    fn int32(&mut self, what: &str) -> io::Result<i32> {
        let part = self.0.get(..4).ok_or_else(|| malformed(what))?;
        let value = i32::from_be_bytes([part[0], part[1], part[2], part[3]]);
        self.0 = &self.0[4..];
        Ok(value)
    }

    /// A count, then that many items of `size` bytes.
    fn counted(&mut self, size: usize, what: &str) -> io::Result<()> {
        let n = self.count(what)?;
        self.take(n * size, what)
    }

    /// Nothing may follow the message's fields.
    fn end(&self, what: &str) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(malformed(&format!("{what} with bytes after its fields")))
        }
    }
}

/// Checks the body of a typed message with the layout the protocol gives.
fn check_body(kind: u8, body: &[u8]) -> io::Result<()> {
    let mut body = Body(body);
    let name = match kind {
        b'Q' => {
            body.cstring("Query without its terminating NUL")?;
            "Query"
        }
        b'P' => {
            body.cstring("Parse without a statement name")?;
            body.cstring("Parse without a query")?;
            body.counted(4, "Parse with short parameter types")?;
            "Parse"
        }
        b'B' => {
            body.cstring("Bind without a portal name")?;
            body.cstring("Bind without a statement name")?;
            body.counted(2, "Bind with short parameter formats")?;
            let params = body.count("Bind without a parameter count")?;
            for _ in 0..params {
                let len = body.int32("Bind with a short parameter")?;
                if len > 0 {
                    body.take(len as usize, "Bind with a short parameter")?;
                } else if len < -1 {
                    return Err(malformed("Bind with a negative parameter length"));
                }
            }
            body.counted(2, "Bind with short result formats")?;
            "Bind"
        }
        b'E' => {
            body.cstring("Execute without a portal name")?;
            body.take(4, "Execute without a row limit")?;
            "Execute"
        }
        b'D' | b'C' => {
            body.take(1, "Describe or Close without a target kind")?;
            body.cstring("Describe or Close without a name")?;
            "Describe or Close"
        }
        b'f' => {
            body.cstring("CopyFail without its message")?;
            "CopyFail"
        }
        // Sync, Flush, Terminate and CopyDone have no body.
        _ => "Sync, Flush, Terminate or CopyDone",
    };
    body.end(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\0eddy\0\0";
        let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    fn ssl_request() -> Vec<u8> {
        let mut out = 8u32.to_be_bytes().to_vec();
        out.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        out
    }

    /// Scans `stream` in chunks of every size; returns the outcome.
    fn scan_in_chunks(stream: &[u8]) -> Vec<io::Result<()>> {
        (1..=stream.len().max(1))
            .map(|chunk| {
                let mut checker = FrameChecker::default();
                stream.chunks(chunk).try_for_each(|c| checker.scan(c))
            })
            .collect()
    }

    #[test]
    fn well_formed_messages_pass_in_any_chunking() {
        let mut stream = ssl_request();
        stream.extend(startup());
        stream.extend(frame(b'P', b"s1\0SELECT $1\0\x00\x01\x00\x00\x00\x17"));
        stream.extend(frame(
            b'B',
            b"\0s1\0\x00\x01\x00\x00\x00\x01\x00\x00\x00\x02hi\x00\x01\x00\x01",
        ));
        stream.extend(frame(b'D', b"P\0"));
        stream.extend(frame(b'E', b"\0\x00\x00\x00\x00"));
        stream.extend(frame(b'S', b""));
        stream.extend(frame(b'Q', b"SELECT 1\0"));
        for outcome in scan_in_chunks(&stream) {
            assert!(outcome.is_ok(), "{outcome:?}");
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        for (kind, body) in [
            (b'P', &b""[..]),
            (b'P', b"s\0q\0\x00"),
            (b'P', b"s\0q\0\x00\x02\x00\x00\x00\x17"),
            (b'B', b"\0\0\xff\xff"),
            (b'B', b"\0\0\x00\x00\x00\x01\x00\x00\x00\x09ab"),
            (b'E', b""),
            (b'D', b"S"),
            (b'Q', b"SELECT 1"),
            // A short Parse smuggled behind a complete Query or Sync.
            (b'Q', b"SELECT 1\0P\0\0\0\x08s\0q\0"),
            (b'S', b"P\0\0\0\x04"),
            (b'E', b"\0\0\0\0\0\0"),
        ] {
            let mut stream = startup();
            stream.extend(frame(kind, body));
            for outcome in scan_in_chunks(&stream) {
                let error = outcome.expect_err(&format!("{} {body:?}", kind as char));
                assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            }
        }
        let mut short = startup();
        short.extend([b'S', 0, 0, 0, 2]);
        assert!(FrameChecker::default().scan(&short).is_err());
        // A startup packet with bytes after its parameters.
        let body = b"\x00\x03\x00\x00user\0eddy\0\0P\0";
        let mut long = (body.len() as u32 + 4).to_be_bytes().to_vec();
        long.extend_from_slice(body);
        assert!(FrameChecker::default().scan(&long).is_err());
        // A Bind may carry more than 32767 parameters.
        let mut bind = b"\0\0\x00\x00".to_vec();
        bind.extend(40_000u16.to_be_bytes());
        for _ in 0..40_000 {
            bind.extend((-1i32).to_be_bytes());
        }
        bind.extend([0, 0]);
        let mut stream = startup();
        stream.extend(frame(b'B', &bind));
        assert!(FrameChecker::default().scan(&stream).is_ok());
    }
}
