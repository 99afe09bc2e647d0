//! `exec` and `attach` as kubelet serves them: one command session ([`run`]) carried by either of
//! Kubernetes' two transports.
//!
//! - **WebSocket** ([`over_websocket`]), `v5.channel.k8s.io` and `v4.channel.k8s.io` (newer
//!   kubectl, the Python client): every binary message starts with its channel (0 stdin, 1
//!   stdout, 2 stderr, 3 the final `Status`, 4 terminal resize as `{"Width":..,"Height":..}`, and
//!   in v5 255 to close a channel, used for the end of stdin).
//! - **SPDY/3.1** ([`over_spdy`]), `v4.channel.k8s.io` (kubectl 1.20): the client opens one stream
//!   per channel, named by its `streamType` header (`error`, `stdin`, `stdout`, `stderr`,
//!   `resize`); stdin ends with the stream's `FIN`, the final `Status` is written on `error`.
//!
//! Either way the session ends with the `Status` kubelet writes: `Success`, or `Failure` with
//! reason `NonZeroExitCode` and the exit code as an `ExitCode` cause (which kubectl turns into its
//! own exit code).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::runtime::{ContainerRuntime, ExecOutput, ExecRequest};
use super::spdy;

/// The channel protocols, newest first.
pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;
/// How long a SPDY client may take to open the streams its request names (kubelet's
/// `streamCreationTimeout`).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What a session runs: a new process, or the container's own (attach).
#[derive(Debug, Clone)]
pub enum Command {
    Exec { container_id: String, request: ExecRequest },
    Attach { container_id: String, request: ExecRequest },
}

impl Command {
    fn request(&self) -> &ExecRequest {
        match self {
            Command::Exec { request, .. } | Command::Attach { request, .. } => request,
        }
    }
}

/// The final `Status` of an exec, as kubelet writes it on the error channel.
pub fn exec_status(command: &[String], exit_code: Option<i64>) -> serde_json::Value {
    match exit_code {
        Some(0) => serde_json::json!({ "metadata": {}, "status": "Success" }),
        Some(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] },
        }),
        None => serde_json::json!({ "metadata": {}, "status": "Failure", "message": "the command's exit code is unknown", "reason": "InternalError" }),
    }
}

fn failure(message: String) -> serde_json::Value {
    serde_json::json!({ "metadata": {}, "status": "Failure", "message": message, "reason": "InternalError" })
}

/// Runs a session: the client's stdin and terminal sizes in, its output out on `output`; returns
/// the final `Status`. Ends when the process's output does (or nobody reads `output` any more).
pub async fn run(
    runtime: Arc<dyn ContainerRuntime>,
    command: Command,
    mut stdin: mpsc::Receiver<Bytes>,
    mut resize: mpsc::Receiver<(u16, u16)>,
    output: mpsc::Sender<ExecOutput>,
) -> serde_json::Value {
    let request = command.request().clone();
    let session = match &command {
        Command::Exec { container_id, request } => runtime.exec_attached(container_id, request).await,
        Command::Attach { container_id, request } => runtime.attach(container_id, request).await,
    };
    let super::runtime::ExecSession { exec_id, output: mut from_process, mut input } = match session {
        Ok(s) => s,
        Err(e) => return failure(e.to_string()),
    };
    let feeder = tokio::spawn(async move {
        if request.stdin {
            while let Some(data) = stdin.recv().await {
                if input.write_all(&data).await.is_err() || input.flush().await.is_err() {
                    break;
                }
            }
        }
        let _ = input.shutdown().await;
    });
    let (resize_runtime, resize_command, resize_id) = (runtime.clone(), command.clone(), exec_id.clone());
    let resizer = tokio::spawn(async move {
        while let Some((width, height)) = resize.recv().await {
            let _ = match resize_command {
                Command::Exec { .. } => resize_runtime.exec_resize(&resize_id, width, height).await,
                Command::Attach { .. } => resize_runtime.resize(&resize_id, width, height).await,
            };
        }
    });
    let mut client_gone = false;
    while let Some(chunk) = from_process.next().await {
        let chunk = match chunk {
            Ok(ExecOutput::Stdout(data)) if request.stdout => ExecOutput::Stdout(data),
            Ok(ExecOutput::Stderr(data)) if request.stderr => ExecOutput::Stderr(data),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "reading a session's output");
                break;
            }
        };
        if output.send(chunk).await.is_err() {
            client_gone = true;
            break;
        }
    }
    feeder.abort();
    resizer.abort();
    match command {
        // An attach ends when the container's streams do (kubelet then answers Success).
        Command::Attach { .. } => serde_json::json!({ "metadata": {}, "status": "Success" }),
        Command::Exec { .. } if client_gone => failure("the client went away".into()),
        // The output ends as the process does; its exit code follows a moment later.
        Command::Exec { .. } => {
            let mut exit_code = None;
            for _ in 0..50 {
                match runtime.exec_exit_code(&exec_id).await {
                    Ok(Some(code)) => {
                        exit_code = Some(code);
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(_) => break,
                }
            }
            exec_status(&request.command, exit_code)
        }
    }
}

/// A terminal size message, `{"Width":80,"Height":24}`.
#[derive(serde::Deserialize)]
struct TerminalSize {
    #[serde(rename = "Width", default)]
    width: u16,
    #[serde(rename = "Height", default)]
    height: u16,
}

/// The sizes in `buffer` (a stream of JSON objects), taking what it used; a partial object stays.
fn take_sizes(buffer: &mut Vec<u8>) -> Vec<(u16, u16)> {
    let mut sizes = Vec::new();
    let mut objects = serde_json::Deserializer::from_slice(buffer).into_iter::<TerminalSize>();
    let used = loop {
        match objects.next() {
            Some(Ok(size)) => sizes.push((size.width, size.height)),
            Some(Err(e)) if e.is_eof() => break objects.byte_offset(),
            // Not a size: drop what came.
            Some(Err(_)) => break buffer.len(),
            None => break buffer.len(),
        }
    };
    buffer.drain(..used);
    sizes
}

/// Ends the WebSocket with a normal closure (1000): client-go reads any other close as an error.
pub(crate) async fn close_normally(sink: &mut futures::stream::SplitSink<WebSocket, Message>) {
    let frame = axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// A binary message of the WebSocket channel protocol: the channel's number, then the bytes.
pub(crate) fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    Message::Binary(message.into())
}

/// A session over a WebSocket in the channel protocol (`v5` when it was chosen, else `v4`).
pub async fn over_websocket(socket: WebSocket, v5: bool, runtime: Arc<dyn ContainerRuntime>, command: Command) {
    let (mut sink, mut incoming) = socket.split();
    let framed = channel_message;
    let (stdin_tx, stdin_rx) = mpsc::channel(16);
    let (resize_tx, resize_rx) = mpsc::channel(4);
    let reader = tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(Ok(message)) = incoming.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, rest)) = data.split_first() else { continue };
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(Bytes::copy_from_slice(rest)).await.is_err() {
                            stdin_tx = None;
                        }
                }
                RESIZE => {
                    for size in take_sizes(&mut rest.to_vec()) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                CLOSE if v5 && rest.first() == Some(&STDIN) => stdin_tx = None,
                _ => {}
            }
        }
    });
    let (output_tx, mut output_rx) = mpsc::channel(16);
    let session = tokio::spawn(run(runtime, command, stdin_rx, resize_rx, output_tx));
    while let Some(chunk) = output_rx.recv().await {
        let message = match chunk {
            ExecOutput::Stdout(data) => framed(STDOUT, &data),
            ExecOutput::Stderr(data) => framed(STDERR, &data),
        };
        if sink.send(message).await.is_err() {
            // The client is gone: the session sees its output dropped and ends.
            break;
        }
    }
    drop(output_rx);
    let status = session.await.unwrap_or_else(|e| failure(e.to_string()));
    reader.abort();
    let _ = sink.send(framed(ERROR, status.to_string().as_bytes())).await;
    close_normally(&mut sink).await;
}

/// The streams a SPDY session waits for, by `streamType`.
fn expected_streams(request: &ExecRequest) -> Vec<&'static str> {
    let mut kinds = vec!["error"];
    for (on, kind) in [(request.stdin, "stdin"), (request.stdout, "stdout"), (request.stderr && !request.tty, "stderr"), (request.tty, "resize")] {
        if on {
            kinds.push(kind);
        }
    }
    kinds
}

/// A session over a SPDY/3.1 connection in `v4.channel.k8s.io`.
pub async fn over_spdy<IO>(io: IO, runtime: Arc<dyn ContainerRuntime>, command: Command)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (connection, mut new_streams) = spdy::serve(io);
    let expected = expected_streams(command.request());
    let mut streams: HashMap<&'static str, spdy::Stream> = HashMap::new();
    let all_opened = async {
        while streams.len() < expected.len() {
            let Some(stream) = new_streams.recv().await else { return false };
            match expected.iter().find(|k| stream.header("streamType") == Some(**k)) {
                Some(kind) => {
                    streams.insert(kind, stream);
                }
                None => {
                    let _ = stream.writer.reset(spdy::REFUSED_STREAM).await;
                }
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(STREAM_CREATION_TIMEOUT, all_opened).await, Ok(true)) {
        tracing::debug!(?expected, "a SPDY exec client did not open its streams");
        connection.close().await;
        return;
    }
    let error = streams.remove("error").expect("error is always expected");
    let (stdin, resize) = (streams.remove("stdin"), streams.remove("resize"));
    let (stdout, stderr) = (streams.remove("stdout").map(|s| s.writer), streams.remove("stderr").map(|s| s.writer));
    let stdin_rx = stdin.map(|s| s.data).unwrap_or_else(|| mpsc::channel(1).1);
    let (resize_tx, resize_rx) = mpsc::channel(4);
    let resizer = resize.map(|mut stream| {
        tokio::spawn(async move {
            let mut buffer = Vec::new();
            while let Some(data) = stream.data.recv().await {
                buffer.extend_from_slice(&data);
                for size in take_sizes(&mut buffer) {
                    let _ = resize_tx.send(size).await;
                }
            }
        })
    });
    let (output_tx, mut output_rx) = mpsc::channel(16);
    let session = tokio::spawn(run(runtime, command, stdin_rx, resize_rx, output_tx));
    while let Some(chunk) = output_rx.recv().await {
        let (writer, data) = match &chunk {
            ExecOutput::Stdout(data) => (stdout.as_ref(), data),
            ExecOutput::Stderr(data) => (stderr.as_ref(), data),
        };
        if let Some(writer) = writer
            && writer.write(data).await.is_err() {
                break;
            }
    }
    drop(output_rx);
    let status = session.await.unwrap_or_else(|e| failure(e.to_string()));
    if let Some(resizer) = resizer {
        resizer.abort();
    }
    for writer in [stdout.as_ref(), stderr.as_ref()].into_iter().flatten() {
        let _ = writer.finish().await;
    }
    let _ = error.writer.write(status.to_string().as_bytes()).await;
    let _ = error.writer.finish().await;
    connection.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sizes_are_read_from_a_stream_of_objects_split_anywhere() {
        let mut buffer = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(take_sizes(&mut buffer), vec![(80, 24)]);
        assert_eq!(buffer, br#"{"Width":100,"#.to_vec(), "a partial object waits for the rest");
        buffer.extend_from_slice(br#""Height":30}"#);
        assert_eq!(take_sizes(&mut buffer), vec![(100, 30)]);
        assert!(buffer.is_empty());
        let mut junk = b"nope".to_vec();
        assert!(take_sizes(&mut junk).is_empty() && junk.is_empty());
    }

    #[test]
    fn a_spdy_session_waits_for_the_streams_its_request_names() {
        let request = |stdin, stdout, stderr, tty| ExecRequest { command: vec!["sh".into()], stdin, stdout, stderr, tty };
        assert_eq!(expected_streams(&request(false, true, true, false)), ["error", "stdout", "stderr"]);
        assert_eq!(expected_streams(&request(true, true, true, true)), ["error", "stdin", "stdout", "resize"], "a terminal has no stderr");
    }
}
