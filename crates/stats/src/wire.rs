//! The autoscaler's protobuf messages, written by hand with prost's derive.
//!
//! Package `metrics` of Knative's `pkg/autoscaler/metrics/stat.proto`. The
//! queue-proxy serves one [`Stat`] on `:9090/metrics` (queue-proxy spec
//! §5.2); the activator sends one [`WireStatMessages`] per websocket binary
//! frame to the autoscaler (activator spec §5.2). prost writes fields in
//! ascending tag order and omits proto3 zero values, which is byte-for-byte
//! what gogo-protobuf produces, so no `build.rs` or `protoc` is needed.
//!
//! Decoding errors are [`prost::DecodeError`].

use prost::Message;

/// One pod's (or one activator's) load sample.
///
/// `Debug` comes from prost's derive.
#[derive(Clone, PartialEq, Message)]
pub struct Stat {
    /// Name of the pod that produced the sample (`SERVING_POD` / `POD_NAME`).
    #[prost(string, tag = "1")]
    pub pod_name: String,
    /// Time-weighted average concurrency over the last window.
    #[prost(double, tag = "2")]
    pub average_concurrent_requests: f64,
    /// Same, for requests proxied by the activator (the autoscaler subtracts it).
    #[prost(double, tag = "3")]
    pub average_proxied_concurrent_requests: f64,
    /// Requests per second that arrived in the last window.
    #[prost(double, tag = "4")]
    pub request_count: f64,
    /// Same, for requests proxied by the activator.
    #[prost(double, tag = "5")]
    pub proxied_request_count: f64,
    /// Seconds since the queue-proxy started (0 from the activator).
    #[prost(double, tag = "6")]
    pub process_uptime: f64,
    /// Unix seconds; never set by the senders, the autoscaler stamps receipt time.
    #[prost(int64, tag = "7")]
    pub timestamp: i64,
}

/// One revision's entry in an activator frame.
#[derive(Clone, PartialEq, Message)]
pub struct WireStatMessage {
    /// Revision namespace.
    #[prost(string, tag = "1")]
    pub namespace: String,
    /// Revision name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The sample; the autoscaler skips entries without one, so senders always
    /// set it (an all-zero `Stat` still encodes as an empty sub-message).
    #[prost(message, optional, tag = "3")]
    pub stat: Option<Stat>,
}

/// One websocket binary frame from the activator to the autoscaler.
#[derive(Clone, PartialEq, Message)]
pub struct WireStatMessages {
    /// One entry per revision.
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<WireStatMessage>,
}

// === impl WireStatMessage ===

impl WireStatMessage {
    /// An entry for revision `namespace/name`, with `stat` present.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, stat: Stat) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            stat: Some(stat),
        }
    }
}

// === impl WireStatMessages ===

impl WireStatMessages {
    /// Encodes the frame payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn stat_matches_gogo_bytes() {
        // queue-proxy spec §5.2 example.
        let stat = Stat {
            pod_name: "p".to_owned(),
            average_concurrent_requests: 1.0,
            ..Stat::default()
        };
        let bytes = stat.encode_to_vec();
        assert_eq!(
            bytes,
            [
                0x0A, 0x01, 0x70, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF0, 0x3F
            ]
        );
        assert_eq!(Stat::decode(bytes.as_slice()).unwrap(), stat);
    }

    #[test]
    fn every_field_uses_its_tag() {
        let stat = Stat {
            pod_name: String::new(),
            average_concurrent_requests: 0.0,
            average_proxied_concurrent_requests: 1.0,
            request_count: 1.0,
            proxied_request_count: 1.0,
            process_uptime: 1.0,
            timestamp: 1,
        };
        let one = "000000000000f03f";
        assert_eq!(
            hex(&stat.encode_to_vec()),
            format!("19{one}21{one}29{one}31{one}3801")
        );
        assert!(
            Stat::default().encode_to_vec().is_empty(),
            "zeros are omitted"
        );
    }

    #[test]
    fn activator_frame_matches_gogo_bytes() {
        // activator spec §5.2 example (59 bytes).
        let frame = WireStatMessages {
            messages: vec![WireStatMessage::new(
                "default",
                "hello-00001",
                Stat {
                    pod_name: "activator-abc".to_owned(),
                    average_concurrent_requests: 1.0,
                    request_count: 1.0,
                    ..Stat::default()
                },
            )],
        };
        let bytes = frame.to_bytes();
        assert_eq!(bytes.len(), 59);
        assert_eq!(
            hex(&bytes),
            "0a390a0764656661756c74120b68656c6c6f2d30303030311a210a0d616374697661746f722d61626311000000000000f03f21000000000000f03f"
        );
        assert_eq!(WireStatMessages::decode(bytes.as_slice()).unwrap(), frame);
    }

    #[test]
    fn empty_stat_is_still_present() {
        let entry = WireStatMessage::new("ns", "rev", Stat::default());
        let bytes = entry.encode_to_vec();
        assert_eq!(hex(&bytes), "0a026e7312037265761a00");
        let decoded = WireStatMessage::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.stat, Some(Stat::default()));
    }
}
