//! SPDY/3.1, the framing under Kubernetes' older streaming protocols (`kubectl exec`, `attach`
//! and `port-forward` of kubectl 1.20, and `port-forward` of newer kubectl tunnelled through a
//! WebSocket), as client-go's `moby/spdystream` speaks it: the server side of one connection.
//!
//! Frames ([`Frame`]) are SPDY/3's: control frames with version 3 (`SYN_STREAM`, `SYN_REPLY`,
//! `RST_STREAM`, `SETTINGS`, `PING`, `GOAWAY`, `HEADERS`, `WINDOW_UPDATE`) and data frames. Header
//! blocks are compressed with one zlib stream per direction for the whole connection, primed with
//! SPDY/3's [`DICTIONARY`] and sync-flushed after each block ([`Encoder`], [`Decoder`]).
//! spdystream does no flow control (it never sends `WINDOW_UPDATE` and ignores it), so neither
//! does this: a slow reader holds back the connection through TCP.
//!
//! [`serve`] runs a connection: every stream the client opens is answered with a `SYN_REPLY` and
//! handed over as a [`Stream`] (its headers, a channel of the data the client sends on it, which
//! closes at the client's `FIN` or reset, and a [`StreamWriter`] for the other direction); pings
//! are echoed; the connection ends at the client's `GOAWAY` or the end of its bytes.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc};

/// The `Upgrade` header's protocol.
pub const UPGRADE: &str = "SPDY/3.1";

/// SPDY/3's header compression dictionary (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1).
pub const DICTIONARY: &[u8] = &[
    0x00, 0x00, 0x00, 0x07, 0x6f, 0x70, 0x74, 0x69, 0x6f, 0x6e, 0x73, 0x00, 0x00, 0x00, 0x04, 0x68,
    0x65, 0x61, 0x64, 0x00, 0x00, 0x00, 0x04, 0x70, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x03, 0x70,
    0x75, 0x74, 0x00, 0x00, 0x00, 0x06, 0x64, 0x65, 0x6c, 0x65, 0x74, 0x65, 0x00, 0x00, 0x00, 0x05,
    0x74, 0x72, 0x61, 0x63, 0x65, 0x00, 0x00, 0x00, 0x06, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x00,
    0x00, 0x00, 0x0e, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65,
    0x74, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f,
    0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x6c,
    0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x63, 0x63, 0x65, 0x70,
    0x74, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x73, 0x00, 0x00, 0x00, 0x03, 0x61, 0x67, 0x65, 0x00,
    0x00, 0x00, 0x05, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x75, 0x74, 0x68,
    0x6f, 0x72, 0x69, 0x7a, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x61, 0x63,
    0x68, 0x65, 0x2d, 0x63, 0x6f, 0x6e, 0x74, 0x72, 0x6f, 0x6c, 0x00, 0x00, 0x00, 0x0a, 0x63, 0x6f,
    0x6e, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x62, 0x61, 0x73, 0x65, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10,
    0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65,
    0x00, 0x00, 0x00, 0x0e, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x65, 0x6e, 0x67,
    0x74, 0x68, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x6f,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0b, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x6d, 0x64, 0x35, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
    0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x00, 0x00, 0x00, 0x04, 0x64, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x04, 0x65, 0x74, 0x61, 0x67, 0x00, 0x00, 0x00, 0x06, 0x65, 0x78, 0x70, 0x65, 0x63, 0x74,
    0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x70, 0x69, 0x72, 0x65, 0x73, 0x00, 0x00, 0x00, 0x04, 0x66,
    0x72, 0x6f, 0x6d, 0x00, 0x00, 0x00, 0x04, 0x68, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x08, 0x69,
    0x66, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00, 0x11, 0x69, 0x66, 0x2d, 0x6d, 0x6f,
    0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65, 0x00, 0x00, 0x00, 0x0d,
    0x69, 0x66, 0x2d, 0x6e, 0x6f, 0x6e, 0x65, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00,
    0x08, 0x69, 0x66, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x13, 0x69, 0x66, 0x2d,
    0x75, 0x6e, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65,
    0x00, 0x00, 0x00, 0x0d, 0x6c, 0x61, 0x73, 0x74, 0x2d, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65,
    0x64, 0x00, 0x00, 0x00, 0x08, 0x6c, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00,
    0x0c, 0x6d, 0x61, 0x78, 0x2d, 0x66, 0x6f, 0x72, 0x77, 0x61, 0x72, 0x64, 0x73, 0x00, 0x00, 0x00,
    0x06, 0x70, 0x72, 0x61, 0x67, 0x6d, 0x61, 0x00, 0x00, 0x00, 0x12, 0x70, 0x72, 0x6f, 0x78, 0x79,
    0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00,
    0x13, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x61,
    0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x05, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00,
    0x07, 0x72, 0x65, 0x66, 0x65, 0x72, 0x65, 0x72, 0x00, 0x00, 0x00, 0x0b, 0x72, 0x65, 0x74, 0x72,
    0x79, 0x2d, 0x61, 0x66, 0x74, 0x65, 0x72, 0x00, 0x00, 0x00, 0x06, 0x73, 0x65, 0x72, 0x76, 0x65,
    0x72, 0x00, 0x00, 0x00, 0x02, 0x74, 0x65, 0x00, 0x00, 0x00, 0x07, 0x74, 0x72, 0x61, 0x69, 0x6c,
    0x65, 0x72, 0x00, 0x00, 0x00, 0x11, 0x74, 0x72, 0x61, 0x6e, 0x73, 0x66, 0x65, 0x72, 0x2d, 0x65,
    0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x07, 0x75, 0x70, 0x67, 0x72, 0x61,
    0x64, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x75, 0x73, 0x65, 0x72, 0x2d, 0x61, 0x67, 0x65, 0x6e, 0x74,
    0x00, 0x00, 0x00, 0x04, 0x76, 0x61, 0x72, 0x79, 0x00, 0x00, 0x00, 0x03, 0x76, 0x69, 0x61, 0x00,
    0x00, 0x00, 0x07, 0x77, 0x61, 0x72, 0x6e, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10, 0x77, 0x77,
    0x77, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x06, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x00, 0x00, 0x00, 0x03, 0x67, 0x65, 0x74, 0x00,
    0x00, 0x00, 0x06, 0x73, 0x74, 0x61, 0x74, 0x75, 0x73, 0x00, 0x00, 0x00, 0x06, 0x32, 0x30, 0x30,
    0x20, 0x4f, 0x4b, 0x00, 0x00, 0x00, 0x07, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x00, 0x00,
    0x00, 0x08, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x00, 0x00, 0x03, 0x75, 0x72,
    0x6c, 0x00, 0x00, 0x00, 0x06, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0x00, 0x00, 0x00, 0x0a, 0x73,
    0x65, 0x74, 0x2d, 0x63, 0x6f, 0x6f, 0x6b, 0x69, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x6b, 0x65, 0x65,
    0x70, 0x2d, 0x61, 0x6c, 0x69, 0x76, 0x65, 0x00, 0x00, 0x00, 0x06, 0x6f, 0x72, 0x69, 0x67, 0x69,
    0x6e, 0x31, 0x30, 0x30, 0x31, 0x30, 0x31, 0x32, 0x30, 0x31, 0x32, 0x30, 0x32, 0x32, 0x30, 0x35,
    0x32, 0x30, 0x36, 0x33, 0x30, 0x30, 0x33, 0x30, 0x32, 0x33, 0x30, 0x33, 0x33, 0x30, 0x34, 0x33,
    0x30, 0x35, 0x33, 0x30, 0x36, 0x33, 0x30, 0x37, 0x34, 0x30, 0x32, 0x34, 0x30, 0x35, 0x34, 0x30,
    0x36, 0x34, 0x30, 0x37, 0x34, 0x30, 0x38, 0x34, 0x30, 0x39, 0x34, 0x31, 0x30, 0x34, 0x31, 0x31,
    0x34, 0x31, 0x32, 0x34, 0x31, 0x33, 0x34, 0x31, 0x34, 0x34, 0x31, 0x35, 0x34, 0x31, 0x36, 0x34,
    0x31, 0x37, 0x35, 0x30, 0x32, 0x35, 0x30, 0x34, 0x35, 0x30, 0x35, 0x32, 0x30, 0x33, 0x20, 0x4e,
    0x6f, 0x6e, 0x2d, 0x41, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x74, 0x61, 0x74, 0x69, 0x76, 0x65,
    0x20, 0x49, 0x6e, 0x66, 0x6f, 0x72, 0x6d, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x32, 0x30, 0x34, 0x20,
    0x4e, 0x6f, 0x20, 0x43, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x33, 0x30, 0x31, 0x20, 0x4d, 0x6f,
    0x76, 0x65, 0x64, 0x20, 0x50, 0x65, 0x72, 0x6d, 0x61, 0x6e, 0x65, 0x6e, 0x74, 0x6c, 0x79, 0x34,
    0x30, 0x30, 0x20, 0x42, 0x61, 0x64, 0x20, 0x52, 0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x34, 0x30,
    0x31, 0x20, 0x55, 0x6e, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x65, 0x64, 0x34, 0x30,
    0x33, 0x20, 0x46, 0x6f, 0x72, 0x62, 0x69, 0x64, 0x64, 0x65, 0x6e, 0x34, 0x30, 0x34, 0x20, 0x4e,
    0x6f, 0x74, 0x20, 0x46, 0x6f, 0x75, 0x6e, 0x64, 0x35, 0x30, 0x30, 0x20, 0x49, 0x6e, 0x74, 0x65,
    0x72, 0x6e, 0x61, 0x6c, 0x20, 0x53, 0x65, 0x72, 0x76, 0x65, 0x72, 0x20, 0x45, 0x72, 0x72, 0x6f,
    0x72, 0x35, 0x30, 0x31, 0x20, 0x4e, 0x6f, 0x74, 0x20, 0x49, 0x6d, 0x70, 0x6c, 0x65, 0x6d, 0x65,
    0x6e, 0x74, 0x65, 0x64, 0x35, 0x30, 0x33, 0x20, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x20,
    0x55, 0x6e, 0x61, 0x76, 0x61, 0x69, 0x6c, 0x61, 0x62, 0x6c, 0x65, 0x4a, 0x61, 0x6e, 0x20, 0x46,
    0x65, 0x62, 0x20, 0x4d, 0x61, 0x72, 0x20, 0x41, 0x70, 0x72, 0x20, 0x4d, 0x61, 0x79, 0x20, 0x4a,
    0x75, 0x6e, 0x20, 0x4a, 0x75, 0x6c, 0x20, 0x41, 0x75, 0x67, 0x20, 0x53, 0x65, 0x70, 0x74, 0x20,
    0x4f, 0x63, 0x74, 0x20, 0x4e, 0x6f, 0x76, 0x20, 0x44, 0x65, 0x63, 0x20, 0x30, 0x30, 0x3a, 0x30,
    0x30, 0x3a, 0x30, 0x30, 0x20, 0x4d, 0x6f, 0x6e, 0x2c, 0x20, 0x54, 0x75, 0x65, 0x2c, 0x20, 0x57,
    0x65, 0x64, 0x2c, 0x20, 0x54, 0x68, 0x75, 0x2c, 0x20, 0x46, 0x72, 0x69, 0x2c, 0x20, 0x53, 0x61,
    0x74, 0x2c, 0x20, 0x53, 0x75, 0x6e, 0x2c, 0x20, 0x47, 0x4d, 0x54, 0x63, 0x68, 0x75, 0x6e, 0x6b,
    0x65, 0x64, 0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x68, 0x74, 0x6d, 0x6c, 0x2c, 0x69, 0x6d, 0x61,
    0x67, 0x65, 0x2f, 0x70, 0x6e, 0x67, 0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x6a, 0x70, 0x67,
    0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x67, 0x69, 0x66, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x6d, 0x6c, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x68, 0x74, 0x6d, 0x6c, 0x2b, 0x78, 0x6d, 0x6c,
    0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x70, 0x6c, 0x61, 0x69, 0x6e, 0x2c, 0x74, 0x65, 0x78, 0x74,
    0x2f, 0x6a, 0x61, 0x76, 0x61, 0x73, 0x63, 0x72, 0x69, 0x70, 0x74, 0x2c, 0x70, 0x75, 0x62, 0x6c,
    0x69, 0x63, 0x70, 0x72, 0x69, 0x76, 0x61, 0x74, 0x65, 0x6d, 0x61, 0x78, 0x2d, 0x61, 0x67, 0x65,
    0x3d, 0x67, 0x7a, 0x69, 0x70, 0x2c, 0x64, 0x65, 0x66, 0x6c, 0x61, 0x74, 0x65, 0x2c, 0x73, 0x64,
    0x63, 0x68, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x75, 0x74, 0x66, 0x2d, 0x38, 0x63,
    0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x69, 0x73, 0x6f, 0x2d, 0x38, 0x38, 0x35, 0x39, 0x2d,
    0x31, 0x2c, 0x75, 0x74, 0x66, 0x2d, 0x2c, 0x2a, 0x2c, 0x65, 0x6e, 0x71, 0x3d, 0x30, 0x2e,
];

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// `RST_STREAM` status for a stream id out of order.
pub const PROTOCOL_ERROR: u32 = 1;
/// `RST_STREAM` status for a stream the server will not serve.
pub const REFUSED_STREAM: u32 = 3;
/// The largest frame read: a frame's length has 24 bits; header blocks larger than this are
/// refused before they are inflated.
const MAX_CONTROL_FRAME: usize = 1 << 20;
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Data written in frames of at most this much.
const DATA_CHUNK: usize = 32 * 1024;

/// A header block: names in lower case, as SPDY/3 requires.
pub type Headers = Vec<(String, String)>;

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream { stream_id: u32, associated: u32, priority: u8, fin: bool, unidirectional: bool, headers: Headers },
    SynReply { stream_id: u32, fin: bool, headers: Headers },
    RstStream { stream_id: u32, status: u32 },
    Settings,
    Ping(u32),
    GoAway { last_good: u32, status: u32 },
    Headers { stream_id: u32, fin: bool, headers: Headers },
    WindowUpdate { stream_id: u32, delta: u32 },
    Data { stream_id: u32, fin: bool, data: Bytes },
    /// A control frame of a type SPDY/3 does not define (ignored, as the protocol says).
    Unknown(u16),
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Header blocks as SPDY/3 lays them out before compression: a count, then each name and value
/// with a 32-bit length (several values of one name joined by NUL).
fn header_block(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        for s in [name.to_ascii_lowercase().as_str(), value.as_str()] {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

fn parse_header_block(raw: &[u8]) -> io::Result<Headers> {
    let mut rest = raw;
    let mut take = |n: usize| -> io::Result<&[u8]> {
        if rest.len() < n {
            return Err(invalid("a truncated SPDY header block"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = word(take(4)?);
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = word(take(4)?);
        let name = String::from_utf8_lossy(take(len)?).to_ascii_lowercase();
        let len = word(take(4)?);
        let value = String::from_utf8_lossy(take(len)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// The first value of a header (names compare without case; SPDY joins several values with NUL).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

/// Writes frames; owns the compression side of the header zlib stream.
pub struct Encoder {
    compress: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        let mut compress = Compress::new(Compression::default(), true);
        compress.set_dictionary(DICTIONARY).expect("a fresh zlib stream takes a dictionary");
        Self { compress }
    }

    fn deflate(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw;
        loop {
            let before = self.compress.total_in();
            self.compress.compress_vec(input, &mut out, FlushCompress::Sync).expect("deflate into memory does not fail");
            input = &input[(self.compress.total_in() - before) as usize..];
            // A sync flush is complete once it stopped with room to spare.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(256);
        }
    }

    /// The bytes of `frame` on the wire.
    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let control = |kind: u16, flags: u8, body: Vec<u8>| {
            let mut out = Vec::with_capacity(body.len() + 8);
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&body);
            out
        };
        let fin = |f: bool| if f { FLAG_FIN } else { 0 };
        let words = |ws: &[u32]| ws.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
        match frame {
            Frame::SynStream { stream_id, associated, priority, fin: f, unidirectional, headers } => {
                let mut body = words(&[*stream_id, *associated]);
                body.extend_from_slice(&[priority << 5, 0]);
                body.extend(self.deflate(&header_block(headers)));
                control(SYN_STREAM, fin(*f) | if *unidirectional { FLAG_UNIDIRECTIONAL } else { 0 }, body)
            }
            Frame::SynReply { stream_id, fin: f, headers } => {
                let mut body = words(&[*stream_id]);
                body.extend(self.deflate(&header_block(headers)));
                control(SYN_REPLY, fin(*f), body)
            }
            Frame::Headers { stream_id, fin: f, headers } => {
                let mut body = words(&[*stream_id]);
                body.extend(self.deflate(&header_block(headers)));
                control(HEADERS, fin(*f), body)
            }
            Frame::RstStream { stream_id, status } => control(RST_STREAM, 0, words(&[*stream_id, *status])),
            Frame::Settings => control(SETTINGS, 0, words(&[0])),
            Frame::Ping(id) => control(PING, 0, words(&[*id])),
            Frame::GoAway { last_good, status } => control(GOAWAY, 0, words(&[*last_good, *status])),
            Frame::WindowUpdate { stream_id, delta } => control(WINDOW_UPDATE, 0, words(&[*stream_id, *delta])),
            Frame::Unknown(kind) => control(*kind, 0, Vec::new()),
            Frame::Data { stream_id, fin: f, data } => {
                let mut out = Vec::with_capacity(data.len() + 8);
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(fin(*f));
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                out
            }
        }
    }
}

/// Reads frames; owns the decompression side of the header zlib stream.
pub struct Decoder {
    decompress: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self { decompress: Decompress::new(true) }
    }

    fn inflate(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            let before = self.decompress.total_in();
            let result = self.decompress.decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.decompress.total_in() - before) as usize..];
            match result {
                Ok(_) => {}
                // The stream's header names a preset dictionary: SPDY/3's is the only one.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.decompress.set_dictionary(DICTIONARY).map_err(|e| invalid(format!("SPDY header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(invalid(format!("inflating a SPDY header block: {e}"))),
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(invalid("a SPDY header block larger than 1 MiB"));
            }
            out.reserve(out.capacity().max(256));
        }
    }

    fn headers(&mut self, block: &[u8]) -> io::Result<Headers> {
        parse_header_block(&self.inflate(block)?)
    }

    /// The next frame, or `None` at the end of the connection's bytes (between frames).
    pub async fn read<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match reader.read(&mut head[..1]).await? {
            0 => return Ok(None),
            _ => reader.read_exact(&mut head[1..]).await?,
        };
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if first & 0x8000_0000 == 0 {
            let mut data = vec![0u8; length];
            reader.read_exact(&mut data).await?;
            return Ok(Some(Frame::Data { stream_id: first, fin, data: data.into() }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        let kind = (first & 0xffff) as u16;
        if version != VERSION {
            return Err(invalid(format!("SPDY version {version}, not 3")));
        }
        if length > MAX_CONTROL_FRAME {
            return Err(invalid(format!("a SPDY control frame of {length} bytes")));
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        let word = |at: usize| -> io::Result<u32> {
            body.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(|| invalid(format!("a short SPDY control frame (type {kind})")))
        };
        let id = |at: usize| word(at).map(|w| w & 0x7fff_ffff);
        Ok(Some(match kind {
            SYN_STREAM => {
                let (stream_id, associated) = (id(0)?, id(4)?);
                let priority = body.get(8).copied().unwrap_or(0) >> 5;
                let headers = self.headers(body.get(10..).ok_or_else(|| invalid("a short SYN_STREAM"))?)?;
                Frame::SynStream { stream_id, associated, priority, fin, unidirectional: flags & FLAG_UNIDIRECTIONAL != 0, headers }
            }
            SYN_REPLY => Frame::SynReply { stream_id: id(0)?, fin, headers: self.headers(&body[4.min(body.len())..])? },
            HEADERS => Frame::Headers { stream_id: id(0)?, fin, headers: self.headers(&body[4.min(body.len())..])? },
            RST_STREAM => Frame::RstStream { stream_id: id(0)?, status: word(4)? },
            SETTINGS => Frame::Settings,
            PING => Frame::Ping(word(0)?),
            GOAWAY => Frame::GoAway { last_good: id(0)?, status: word(4).unwrap_or(0) },
            WINDOW_UPDATE => Frame::WindowUpdate { stream_id: id(0)?, delta: word(4)? & 0x7fff_ffff },
            other => Frame::Unknown(other),
        }))
    }
}

type BoxedWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The connection's writing side, shared by every stream.
struct Writer {
    inner: Mutex<(BoxedWrite, Encoder)>,
}

impl Writer {
    async fn send(&self, frame: &Frame) -> io::Result<()> {
        let mut guard = self.inner.lock().await;
        let (out, encoder) = &mut *guard;
        let bytes = encoder.encode(frame);
        out.write_all(&bytes).await?;
        out.flush().await
    }
}

/// Writes to one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    writer: Arc<Writer>,
}

impl StreamWriter {
    /// Sends `data` on the stream (in frames of at most 32 KiB).
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(DATA_CHUNK) {
            self.writer.send(&Frame::Data { stream_id: self.id, fin: false, data: Bytes::copy_from_slice(chunk) }).await?;
        }
        Ok(())
    }

    /// Ends the stream's server side (`FIN`): the client reads its end.
    pub async fn finish(&self) -> io::Result<()> {
        self.writer.send(&Frame::Data { stream_id: self.id, fin: true, data: Bytes::new() }).await
    }

    /// Resets the stream.
    pub async fn reset(&self, status: u32) -> io::Result<()> {
        self.writer.send(&Frame::RstStream { stream_id: self.id, status }).await
    }
}

/// A stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// What the client sends on it; closes at its `FIN`, a reset, or the connection's end.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// A served connection: its new streams arrive on the receiver [`serve`] returns.
pub struct Connection {
    writer: Arc<Writer>,
    reader: tokio::task::JoinHandle<()>,
    last_stream: Arc<std::sync::atomic::AtomicU32>,
}

impl Connection {
    /// Ends the connection: `GOAWAY`, then the end of the server's bytes. The reading side stops
    /// when the client closes, or after a few seconds.
    pub async fn close(self) {
        let last_good = self.last_stream.load(std::sync::atomic::Ordering::Relaxed);
        let _ = self.writer.send(&Frame::GoAway { last_good, status: 0 }).await;
        let _ = self.writer.inner.lock().await.0.shutdown().await;
        let reader = self.reader;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reader.abort();
        });
    }
}

/// Serves a SPDY/3.1 connection over `io` (the bytes after the HTTP upgrade).
pub fn serve<IO>(io: IO) -> (Connection, mpsc::Receiver<Stream>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read_half, write_half) = tokio::io::split(io);
    let writer = Arc::new(Writer { inner: Mutex::new((Box::new(write_half), Encoder::new())) });
    let (new_streams, streams) = mpsc::channel(16);
    let last_stream = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (w, last) = (writer.clone(), last_stream.clone());
    let reader = tokio::spawn(async move {
        let mut decoder = Decoder::new();
        let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
        loop {
            let frame = match decoder.read(&mut read_half).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "reading a SPDY frame");
                    break;
                }
            };
            match frame {
                Frame::SynStream { stream_id, fin, headers, .. } => {
                    // Client streams have odd ids that only grow.
                    let previous = last.load(std::sync::atomic::Ordering::Relaxed);
                    if stream_id % 2 == 0 || stream_id <= previous {
                        let _ = w.send(&Frame::RstStream { stream_id, status: PROTOCOL_ERROR }).await;
                        continue;
                    }
                    last.store(stream_id, std::sync::atomic::Ordering::Relaxed);
                    if w.send(&Frame::SynReply { stream_id, fin: false, headers: Vec::new() }).await.is_err() {
                        break;
                    }
                    let (tx, rx) = mpsc::channel(64);
                    if !fin {
                        open.insert(stream_id, tx);
                    }
                    let stream = Stream { id: stream_id, headers, data: rx, writer: StreamWriter { id: stream_id, writer: w.clone() } };
                    if new_streams.send(stream).await.is_err() {
                        let _ = w.send(&Frame::RstStream { stream_id, status: REFUSED_STREAM }).await;
                        open.remove(&stream_id);
                    }
                }
                Frame::Data { stream_id, fin, data } => {
                    if let Some(tx) = open.get(&stream_id)
                        && !data.is_empty() && tx.send(data).await.is_err() {
                            // Nobody reads this stream any more.
                            open.remove(&stream_id);
                        }
                    if fin {
                        open.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    open.remove(&stream_id);
                }
                Frame::Ping(id) => {
                    if w.send(&Frame::Ping(id)).await.is_err() {
                        break;
                    }
                }
                Frame::GoAway { .. } => break,
                Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Settings | Frame::WindowUpdate { .. } | Frame::Unknown(_) => {}
            }
        }
    });
    (Connection { writer, reader, last_stream }, streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[tokio::test]
    async fn frames_round_trip_and_header_blocks_share_one_zlib_stream() {
        let frames = vec![
            Frame::SynStream { stream_id: 1, associated: 0, priority: 0, fin: false, unidirectional: false, headers: h(&[("streamtype", "error")]) },
            Frame::SynStream { stream_id: 3, associated: 0, priority: 3, fin: true, unidirectional: false, headers: h(&[("streamtype", "stdout"), ("port", "80")]) },
            Frame::SynReply { stream_id: 3, fin: false, headers: Vec::new() },
            Frame::Headers { stream_id: 3, fin: true, headers: h(&[("x", "1\x002")]) },
            Frame::Data { stream_id: 3, fin: true, data: Bytes::from_static(b"hello") },
            Frame::RstStream { stream_id: 5, status: REFUSED_STREAM },
            Frame::Settings,
            Frame::Ping(7),
            Frame::WindowUpdate { stream_id: 3, delta: 65536 },
            Frame::GoAway { last_good: 3, status: 0 },
        ];
        let mut encoder = Encoder::new();
        let wire: Vec<u8> = frames.iter().flat_map(|f| encoder.encode(f)).collect();
        let mut decoder = Decoder::new();
        let mut reader = &wire[..];
        for frame in &frames {
            let read = decoder.read(&mut reader).await.unwrap().unwrap();
            match (frame, &read) {
                (Frame::Settings, Frame::Settings) => {}
                _ => assert_eq!(&read, frame),
            }
        }
        assert!(decoder.read(&mut reader).await.unwrap().is_none());
        assert_eq!(header(&h(&[("x", "1\x002")]), "X"), Some("1"));
    }

    /// Header blocks as C zlib (Python's, the format Go's `compress/zlib` writes) compresses them
    /// with SPDY's dictionary: two blocks of one stream, each sync-flushed.
    #[tokio::test]
    async fn header_blocks_from_another_zlib_are_read() {
        let hex = |s: &str| (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>();
        let blocks = [
            hex("78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45a024cc64610024398b209198094adc8c0600000000ffff"),
            hex("c2aa15540a2512d209000000ffff"),
        ];
        let mut decoder = Decoder::new();
        assert_eq!(decoder.headers(&blocks[0]).unwrap(), h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]));
        assert_eq!(decoder.headers(&blocks[1]).unwrap(), h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]));
    }

    #[tokio::test]
    async fn a_served_connection_replies_to_streams_carries_data_both_ways_and_echoes_pings() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (connection, mut streams) = serve(server);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let (mut encoder, mut decoder) = (Encoder::new(), Decoder::new());
        let syn = |id: u32, kind: &str| Frame::SynStream { stream_id: id, associated: 0, priority: 0, fin: false, unidirectional: false, headers: h(&[("streamtype", kind)]) };
        to_server.write_all(&encoder.encode(&syn(1, "stdin"))).await.unwrap();
        to_server.write_all(&encoder.encode(&syn(3, "stdout"))).await.unwrap();
        to_server.write_all(&encoder.encode(&Frame::Ping(1))).await.unwrap();
        // A stream id that goes back is refused.
        to_server.write_all(&encoder.encode(&syn(1, "again"))).await.unwrap();
        to_server.write_all(&encoder.encode(&Frame::Data { stream_id: 1, fin: true, data: Bytes::from_static(b"in") })).await.unwrap();
        let mut stdin = streams.recv().await.unwrap();
        let stdout = streams.recv().await.unwrap();
        assert_eq!((stdin.id, stdin.header("streamType")), (1, Some("stdin")));
        assert_eq!(stdout.header("streamtype"), Some("stdout"));
        assert_eq!(stdin.data.recv().await.unwrap(), Bytes::from_static(b"in"));
        assert!(stdin.data.recv().await.is_none(), "FIN closes the stream's data");
        stdout.writer.write(b"out").await.unwrap();
        stdout.writer.finish().await.unwrap();
        connection.close().await;
        let mut seen = Vec::new();
        while let Some(frame) = decoder.read(&mut from_server).await.unwrap() {
            seen.push(frame);
        }
        assert_eq!(
            seen,
            vec![
                Frame::SynReply { stream_id: 1, fin: false, headers: Vec::new() },
                Frame::SynReply { stream_id: 3, fin: false, headers: Vec::new() },
                Frame::Ping(1),
                Frame::RstStream { stream_id: 1, status: PROTOCOL_ERROR },
                Frame::Data { stream_id: 3, fin: false, data: Bytes::from_static(b"out") },
                Frame::Data { stream_id: 3, fin: true, data: Bytes::new() },
                Frame::GoAway { last_good: 3, status: 0 },
            ]
        );
    }
}
