use bytes::BytesMut;

use super::*;
use crate::method::{BasicPublish, ChannelOpenOk, ConnectionStart};
use crate::reply::ReplyCode;
use crate::table::{FieldTable, FieldValue};

/// The connection.start frame a RabbitMQ 3.12.4 (Erlang/OTP 26.0.2) node sends, as captured on
/// the wire.
const RABBITMQ_CONNECTION_START: &str =
    include_str!("../tests/data/rabbitmq-3.12.4-connection-start.hex");

fn from_hex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
    let nibble = |d: u8| (d as char).to_digit(16).map_or(0, |v| v as u8);
    digits
        .chunks(2)
        .map(|p| nibble(p[0]) << 4 | nibble(p[1]))
        .collect()
}

fn long_str(table: &FieldTable, key: &str) -> String {
    table
        .get(key)
        .and_then(FieldValue::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn decodes_a_connection_start_captured_from_rabbitmq() {
    let wire = from_hex(RABBITMQ_CONNECTION_START);
    let mut buf = BytesMut::from(&wire[..]);
    let frame = decode_frame(&mut buf, 0).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(frame.channel, 0);
    let FramePayload::Method(Method::ConnectionStart(start)) = &frame.payload else {
        panic!("{frame:?}");
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    assert_eq!(&start.mechanisms[..], b"PLAIN AMQPLAIN");
    assert_eq!(&start.locales[..], b"en_US");
    let props = &start.server_properties;
    assert_eq!(long_str(props, "product"), "RabbitMQ");
    assert_eq!(long_str(props, "version"), "3.12.4");
    let Some(FieldValue::Table(caps)) = props.get("capabilities") else {
        panic!("{props:?}")
    };
    assert_eq!(caps.len(), 9);
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "connection.blocked",
        "direct_reply_to",
    ] {
        assert_eq!(caps.get(cap), Some(&FieldValue::Bool(true)), "{cap}");
    }

    let mut out = BytesMut::new();
    encode_frame(&frame, &mut out);
    assert_eq!(
        &out[..],
        &wire[..],
        "re-encoding gives the captured bytes back"
    );
}

/// basic.publish to "" / "q", a header with content-type and delivery-mode 2, a 5-byte body.
const PUBLISH: &[u8] = b"\x01\x00\x01\x00\x00\x00\x0a\x00\x3c\x00\x28\x00\x00\x00\x01q\x00\xce\
    \x02\x00\x01\x00\x00\x00\x1a\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\
    \x90\x00\x0atext/plain\x02\xce\
    \x03\x00\x01\x00\x00\x00\x05hello\xce";

#[test]
fn decodes_a_publish_header_and_body_without_copying() {
    let mut buf = BytesMut::from(PUBLISH);
    let base = buf.as_ptr() as usize;
    let publish = decode_frame(&mut buf, 4096).unwrap().unwrap();
    let want = BasicPublish {
        routing_key: "q".into(),
        ..Default::default()
    };
    assert_eq!(
        publish,
        Frame {
            channel: 1,
            payload: FramePayload::Method(want.into())
        }
    );

    let Some(Frame {
        channel: 1,
        payload: FramePayload::Header(header),
    }) = decode_frame(&mut buf, 4096).unwrap()
    else {
        panic!("expected a header frame");
    };
    assert_eq!((header.class_id, header.body_size), (60, 5));
    let properties = header.properties().unwrap();
    assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(properties.delivery_mode, Some(2));
    assert_eq!(&header.raw_properties[..], b"\x90\x00\x0atext/plain\x02");
    assert_eq!(header.raw_properties.as_ptr() as usize, base + 18 + 19);

    let body = decode_frame(&mut buf, 4096).unwrap().unwrap();
    let FramePayload::Body(body) = body.payload else {
        panic!("{body:?}")
    };
    assert_eq!(&body[..], b"hello");
    assert_eq!(body.as_ptr() as usize, base + PUBLISH.len() - 6);
    assert_eq!(decode_frame(&mut buf, 4096), Ok(None));
}

#[test]
fn encoding_a_publish_gives_the_same_bytes() {
    let mut out = BytesMut::new();
    let publish = BasicPublish {
        routing_key: "q".into(),
        ..Default::default()
    };
    encode_method(1, &publish.into(), &mut out);
    let props = BasicProperties {
        content_type: Some("text/plain".into()),
        delivery_mode: Some(2),
        ..Default::default()
    };
    encode_content_header(1, 60, 5, &props, &mut out);
    encode_body(1, b"hello", 4096, &mut out);
    assert_eq!(&out[..], PUBLISH);

    let mut raw = BytesMut::new();
    encode_content_header_raw(1, 60, 5, b"\x90\x00\x0atext/plain\x02", &mut raw);
    assert_eq!(&raw[..], &PUBLISH[18..18 + 34]);
}

#[test]
fn an_oversize_frame_is_refused_from_its_header_alone() {
    let mut buf = BytesMut::from(&b"\x03\x00\x01\x00\x00\x0f\xf9"[..]);
    let err = decode_frame(&mut buf, 4096);
    assert_eq!(
        err,
        Err(DecodeError::FrameTooLarge {
            size: 4097,
            frame_max: 4096
        })
    );
    assert_eq!(err.unwrap_err().reply_code(), ReplyCode::FrameError);

    let mut huge = BytesMut::from(&b"\x01\x00\x00\xff\xff\xff\xff"[..]);
    let err = decode_frame(&mut huge, 131_072);
    assert_eq!(
        err,
        Err(DecodeError::FrameTooLarge {
            size: 0xffff_ffff + 8,
            frame_max: 131_072
        })
    );
}

#[test]
fn a_frame_of_exactly_frame_max_is_accepted() {
    let mut out = BytesMut::new();
    encode_body(0, &[7; 4088], 4096, &mut out);
    assert_eq!(out.len(), 4096);
    let frame = decode_frame(&mut out, 4096).unwrap().unwrap();
    assert!(matches!(frame.payload, FramePayload::Body(b) if b.len() == 4088));
}

#[test]
fn an_incomplete_frame_waits_and_leaves_the_buffer_alone() {
    for len in 0..18 {
        let mut buf = BytesMut::from(&PUBLISH[..len]);
        assert_eq!(decode_frame(&mut buf, 4096), Ok(None), "{len} bytes");
        assert_eq!(&buf[..], &PUBLISH[..len]);
    }
}

#[test]
fn frame_not_ending_in_ce_is_refused() {
    let mut buf = BytesMut::from(&b"\x08\x00\x00\x00\x00\x00\x00\x00"[..]);
    assert_eq!(decode_frame(&mut buf, 0), Err(DecodeError::BadFrameEnd(0)));
}

#[test]
fn unknown_frame_type_is_refused_from_its_header() {
    let mut buf = BytesMut::from(&b"AMQP\x00\x00\x09"[..]);
    assert_eq!(
        decode_frame(&mut buf, 0),
        Err(DecodeError::UnknownFrameType(b'A'))
    );
}

#[test]
fn heartbeats_must_be_on_channel_zero_and_empty() {
    let mut out = BytesMut::new();
    encode_heartbeat(&mut out);
    assert_eq!(&out[..], b"\x08\x00\x00\x00\x00\x00\x00\xce");
    let frame = decode_frame(&mut out, 4096).unwrap();
    assert_eq!(
        frame,
        Some(Frame {
            channel: 0,
            payload: FramePayload::Heartbeat
        })
    );

    let mut on_channel = BytesMut::from(&b"\x08\x00\x01\x00\x00\x00\x00\xce"[..]);
    let err = decode_frame(&mut on_channel, 4096).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadHeartbeat {
            channel: 1,
            size: 0
        }
    );
    // RabbitMQ's answer, which the spec's 501 gives way to.
    assert_eq!(err.reply_code(), ReplyCode::UnexpectedFrame);

    let mut with_payload = BytesMut::from(&b"\x08\x00\x00\x00\x00\x00\x01\x00\xce"[..]);
    let err = decode_frame(&mut with_payload, 4096);
    assert_eq!(
        err,
        Err(DecodeError::BadHeartbeat {
            channel: 0,
            size: 1
        })
    );
}

#[test]
fn content_header_for_another_class_is_refused() {
    let mut out = BytesMut::new();
    encode_content_header_raw(1, 50, 0, b"\x00\x00", &mut out);
    assert_eq!(
        decode_frame(&mut out, 0),
        Err(DecodeError::BadContentClass(50))
    );
}

#[test]
fn body_is_split_into_frames_of_frame_max_less_eight() {
    let mut out = BytesMut::new();
    encode_body(3, b"0123456789", 12, &mut out);
    let mut parts = Vec::new();
    while let Some(frame) = decode_frame(&mut out, 12).unwrap() {
        assert_eq!(frame.channel, 3);
        let FramePayload::Body(part) = frame.payload else {
            panic!()
        };
        parts.push(part);
    }
    assert_eq!(parts, [&b"0123"[..], b"4567", b"89"]);
}

#[test]
fn empty_body_is_no_frames_and_frame_max_zero_is_one_frame() {
    let mut out = BytesMut::new();
    encode_body(1, b"", 4096, &mut out);
    assert!(out.is_empty());
    encode_body(1, &[1; 10_000], 0, &mut out);
    assert_eq!(out.len(), 10_008);
}

#[test]
fn several_frames_in_one_buffer_decode_one_by_one() {
    let mut buf = BytesMut::new();
    encode_method(0, &ChannelOpenOk {}.into(), &mut buf);
    encode_heartbeat(&mut buf);
    encode_method(0, &ConnectionStart::default().into(), &mut buf);
    buf.truncate(buf.len() - 1);
    assert!(matches!(
        decode_frame(&mut buf, 0),
        Ok(Some(Frame {
            payload: FramePayload::Method(_),
            ..
        }))
    ));
    assert!(matches!(
        decode_frame(&mut buf, 0),
        Ok(Some(Frame {
            payload: FramePayload::Heartbeat,
            ..
        }))
    ));
    assert_eq!(decode_frame(&mut buf, 0), Ok(None));
}

#[test]
fn a_header_built_from_properties_decodes_back_to_them() {
    let properties = BasicProperties {
        priority: Some(3),
        ..Default::default()
    };
    let header = ContentHeader::new(9, &properties);
    let mut out = BytesMut::new();
    encode_frame(
        &Frame {
            channel: 2,
            payload: FramePayload::Header(header),
        },
        &mut out,
    );
    let Some(Frame {
        payload: FramePayload::Header(decoded),
        ..
    }) = decode_frame(&mut out, 0).unwrap()
    else {
        panic!()
    };
    assert_eq!(decoded.properties().unwrap().priority, Some(3));
    assert_eq!(&decoded.raw_properties[..], b"\x08\x00\x03");
}

#[test]
fn malformed_properties_are_found_when_decoded_not_when_framed() {
    // Flags announce a content type whose length runs past the end.
    let mut out = BytesMut::new();
    encode_content_header_raw(1, 60, 5, b"\x80\x00\x09ab", &mut out);
    let Some(Frame {
        payload: FramePayload::Header(header),
        ..
    }) = decode_frame(&mut out, 0).unwrap()
    else {
        panic!()
    };
    assert!(header.properties().is_err());
    // Bytes after the properties.
    let mut out = BytesMut::new();
    encode_content_header_raw(1, 60, 0, b"\x00\x00\x00", &mut out);
    let Some(Frame {
        payload: FramePayload::Header(header),
        ..
    }) = decode_frame(&mut out, 0).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        header.properties(),
        Err(DecodeError::TrailingBytes(1, "content header properties"))
    );
}
