//! gRPC readiness probes (§4.4): `grpc.health.v1.Health/Check` over h2c
//! prior knowledge to `127.0.0.1:<port>`; ready iff the answer is `SERVING`.
//!
//! The two tiny protobuf messages are encoded by hand, which avoids a
//! protobuf toolchain for one string field and one enum field.

use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::http::drive;
use super::{Budget, GrpcAction, ProbeError, USER_AGENT as PROBE_USER_AGENT, connect, within};

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.ServingStatus` values.
const SERVING: u64 = 1;

/// gRPC status code names, indexed by code.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// One health check within `timeout` (the gRPC deadline).
pub(super) async fn probe(
    action: &GrpcAction,
    timeout: Option<Duration>,
) -> Result<(), ProbeError> {
    let port = u16::try_from(action.port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| ProbeError::InvalidPort(action.port.to_string()))?;
    let service = action.service.as_deref().unwrap_or_default();
    let budget = Budget::start(timeout);
    within(budget, check(port, service, budget)).await
}

async fn check(port: u16, service: &str, budget: Option<Budget>) -> Result<(), ProbeError> {
    let stream = connect("127.0.0.1", port).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(ProbeError::Http)?;
    let mut request = Request::post(format!("http://127.0.0.1:{port}{CHECK_PATH}"))
        .version(Version::HTTP_2)
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        // gRPC libraries append their own token to the configured agent.
        .header(USER_AGENT, format!("{PROBE_USER_AGENT} grpc-kdp"))
        .body(Full::new(encode_request(service)?))
        .map_err(|_| ProbeError::InvalidUrl(CHECK_PATH.to_owned()))?;
    if let Some(budget) = budget {
        let remaining = budget
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        // At most 8 digits per the gRPC wire spec.
        let millis = u64::try_from(remaining.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, 99_999_999);
        let value = http::HeaderValue::from_str(&format!("{millis}m"))
            .map_err(|_| ProbeError::InvalidUrl(CHECK_PATH.to_owned()))?;
        request.headers_mut().insert("grpc-timeout", value);
    }
    drive(conn, async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(ProbeError::Http)?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            return Err(ProbeError::GrpcHttpStatus(parts.status.as_u16()));
        }
        let collected = body.collect().await.map_err(ProbeError::Http)?;
        // A trailers-only response carries the status in its headers.
        let status_headers = collected.trailers().cloned().unwrap_or(parts.headers);
        grpc_status(&status_headers)?;
        let status = decode_response(collected.to_bytes())?;
        if status == SERVING {
            Ok(())
        } else {
            Err(ProbeError::NotServing(status_name(status)))
        }
    })
    .await
}

/// A length-prefixed, uncompressed `HealthCheckRequest{service}`.
fn encode_request(service: &str) -> Result<Bytes, ProbeError> {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited); proto3 omits it when empty.
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let len = u32::try_from(message.len())
        .map_err(|_| ProbeError::GrpcMalformed("service name too long"))?;
    let mut frame = BytesMut::with_capacity(message.len() + 5);
    frame.put_u8(0);
    frame.put_u32(len);
    frame.put_slice(&message);
    Ok(frame.freeze())
}

fn grpc_status(headers: &HeaderMap) -> Result<(), ProbeError> {
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok())
        .ok_or(ProbeError::GrpcMalformed("missing grpc-status"))?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Err(ProbeError::GrpcStatus {
        code: CODE_NAMES.get(code).copied().unwrap_or("Unknown"),
        message,
    })
}

/// The `status` field (1) of the first message; absent means `UNKNOWN` (0).
fn decode_response(mut body: Bytes) -> Result<u64, ProbeError> {
    if body.remaining() < 5 {
        return Err(ProbeError::GrpcMalformed("short message frame"));
    }
    if body.get_u8() != 0 {
        return Err(ProbeError::GrpcMalformed("compressed message"));
    }
    let len = usize::try_from(body.get_u32())
        .map_err(|_| ProbeError::GrpcMalformed("message too long"))?;
    if body.remaining() < len {
        return Err(ProbeError::GrpcMalformed("truncated message"));
    }
    let mut message = body.split_to(len);
    let mut status = 0;
    while message.has_remaining() {
        let key = get_varint(&mut message)?;
        let skip = match key & 7 {
            0 => {
                let value = get_varint(&mut message)?;
                if key >> 3 == 1 {
                    status = value;
                }
                0
            }
            1 => 8,
            2 => usize::try_from(get_varint(&mut message)?)
                .map_err(|_| ProbeError::GrpcMalformed("field too long"))?,
            5 => 4,
            _ => return Err(ProbeError::GrpcMalformed("unknown wire type")),
        };
        if message.remaining() < skip {
            return Err(ProbeError::GrpcMalformed("truncated field"));
        }
        message.advance(skip);
    }
    Ok(status)
}

fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNRECOGNIZED",
    }
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8(u8::try_from(value & 0x7f).expect("masked to 7 bits") | 0x80);
        value >>= 7;
    }
    buf.put_u8(u8::try_from(value).expect("below 0x80 after the loop"));
}

fn get_varint(buf: &mut Bytes) -> Result<u64, ProbeError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return Err(ProbeError::GrpcMalformed("truncated varint"));
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ProbeError::GrpcMalformed("varint too long"))
}

#[cfg(test)]
pub(super) mod wire {
    //! Server-side helpers for the tests' health server.

    use bytes::{BufMut as _, Bytes, BytesMut};

    /// Decodes the service name from a request frame.
    pub(in crate::readiness) fn request_service(mut body: Bytes) -> String {
        let _header = body.split_to(5);
        if body.is_empty() {
            return String::new();
        }
        assert_eq!(body.split_to(1)[0], 0x0a);
        let len = super::get_varint(&mut body).expect("varint");
        String::from_utf8(body.split_to(usize::try_from(len).expect("len")).to_vec())
            .expect("utf-8")
    }

    /// Encodes `HealthCheckResponse{status}` as a frame.
    pub(in crate::readiness) fn response(status: u64) -> Bytes {
        let mut message = BytesMut::new();
        if status != 0 {
            message.put_u8(0x08);
            super::put_varint(&mut message, status);
        }
        let mut frame = BytesMut::new();
        frame.put_u8(0);
        frame.put_u32(u32::try_from(message.len()).expect("small"));
        frame.put_slice(&message);
        frame.freeze()
    }
}
