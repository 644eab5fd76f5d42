//! The protobuf codec of `diffgap.v1.Diffgap` (build.rs names it with `codec_path`):
//! tonic_prost's, except that a message that does not decode is the sender's fault and reads
//! INVALID_ARGUMENT, where tonic_prost says INTERNAL, the code of a server bug. On the server
//! that is a request body; a client of these stubs sees the same code for a bad response.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with undecodable messages answered INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ClientFaultCodec<T, U> {
    inner: ProstCodec<T, U>,
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for ClientFaultCodec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::default(),
            _pd: PhantomData,
        }
    }
}

impl<T, U> Codec for ClientFaultCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ClientFaultDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ClientFaultDecoder(self.inner.decoder())
    }
}

/// The decoder of [`ClientFaultCodec`].
#[derive(Debug, Clone)]
pub struct ClientFaultDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ClientFaultDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|e| undecodable(e.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The status of a message that is not valid protobuf. prost's description names the field
/// path and the fault (never the bytes), so it is kept, shortened to one line.
pub fn undecodable(detail: &str) -> Status {
    const MAX_DETAIL: usize = 200;
    let detail: String = detail
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL)
        .collect();
    Status::invalid_argument(format!("the message is not valid protobuf: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::proto;

    /// Runs the codec's decoder over `bytes` through tonic's own framing (a gRPC body).
    async fn decode(bytes: &[u8]) -> Result<proto::BridgeRequest, Status> {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(bytes);
        let body = tonic::body::Body::new(http_body_full(framed));
        let mut stream = tonic::codec::Streaming::new_request(
            ClientFaultCodec::<proto::BridgeResponse, proto::BridgeRequest>::default().decoder(),
            body,
            None,
            None,
        );
        stream.message().await.map(|m| m.expect("one message"))
    }

    /// A complete body of `bytes` (`String` is an `http_body::Body`; the unit inputs here
    /// are ASCII, the wire test in tests/client_faults.rs sends arbitrary bytes).
    fn http_body_full(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("unit inputs are ASCII")
    }

    #[tokio::test]
    async fn undecodable_messages_are_invalid_argument() {
        // Field 1 (model, a string) with a length past the end; wire type 7; field number 0.
        for bad in [&b"\x0a\x7f"[..], b"\x0f", b"\x00\x01"] {
            let e = decode(bad).await.expect_err("not protobuf");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
            assert!(e.message().starts_with("the message is not valid protobuf"));
        }
        let ok = decode(b"\x0a\x01m").await.expect("valid");
        assert_eq!(ok.model, "m");
    }

    #[test]
    fn the_detail_is_one_short_line() {
        let s = undecodable(&format!("a\nb{}", "x".repeat(1000)));
        assert!(!s.message().contains('\n'));
        assert!(s.message().len() < 260, "{}", s.message().len());
    }
}
