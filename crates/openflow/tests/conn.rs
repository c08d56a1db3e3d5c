//! The connection against a scripted fake switch on a unix socket (no Open vSwitch needed):
//! version negotiation, echo in both directions, multipart reassembly, errors matched to their
//! request, and reconnecting after the switch goes away.

use std::time::Duration;

use openflow::conn::{ConnError, Connection, Event, Options};
use openflow::field::Field;
use openflow::flow::{Flow, FlowMod};
use openflow::matching::Match;
use openflow::message::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const T: Duration = Duration::from_secs(10);

async fn read_msg(s: &mut UnixStream) -> (u32, Message) {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).await.expect("header");
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let mut buf = h.to_vec();
    buf.resize(len, 0);
    s.read_exact(&mut buf[8..]).await.expect("body");
    Message::decode(&buf).expect("decode")
}

async fn write_msg(s: &mut UnixStream, xid: u32, m: &Message) {
    s.write_all(&m.encode(xid)).await.expect("write");
}

/// Accepts one connection and plays the switch side of the handshake.
async fn accept(l: &UnixListener, bitmap: u32) -> UnixStream {
    let (mut s, _) = l.accept().await.expect("accept");
    write_msg(&mut s, 1, &Message::Hello(Some(bitmap))).await;
    let (_, hello) = read_msg(&mut s).await;
    assert_eq!(hello, Message::Hello(Some(1 << 4)));
    s
}

/// Answers the features request, after the on-connect configuration sent with it.
async fn features(s: &mut UnixStream) {
    let (x, m) = read_msg(s).await;
    assert_eq!(m, Message::FeaturesRequest);
    assert!(matches!(read_msg(s).await.1, Message::SetConfig(_)));
    assert!(matches!(read_msg(s).await.1, Message::SetAsync(_)));
    let f = Features {
        datapath_id: 42,
        n_buffers: 0,
        n_tables: 254,
        auxiliary_id: 0,
        capabilities: 0,
    };
    write_msg(s, x, &Message::FeaturesReply(f)).await;
}

fn socket_path(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("of-conn-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[tokio::test]
async fn requests_echo_multipart_errors_and_reconnect() {
    let path = socket_path("main");
    let l = UnixListener::bind(&path).expect("bind");
    let opts = Options {
        echo_interval: Duration::from_millis(300),
        backoff_min: Duration::from_millis(20),
        ..Options::default()
    };
    let (conn, mut ev) =
        Connection::start_with(&format!("unix:{}", path.display()), opts).expect("start");

    // First a switch that only speaks OpenFlow 1.0: refused, the client retries.
    let mut old = accept_any(&l).await;
    write_msg(&mut old, 1, &Message::Hello(Some(1 << 1))).await;
    drop(old);

    let mut s = accept(&l, (1 << 1) | (1 << 4) | (1 << 6)).await;
    features(&mut s).await;
    match tokio::time::timeout(T, ev.recv()).await.expect("event") {
        Some(Event::Connected(f)) => assert_eq!(f.datapath_id, 42),
        e => panic!("expected Connected, got {e:?}"),
    }

    // The switch's echo request is answered with the same xid and payload.
    write_msg(&mut s, 77, &Message::EchoRequest(vec![1, 2, 3])).await;
    assert_eq!(
        read_msg(&mut s).await,
        (77, Message::EchoReply(vec![1, 2, 3]))
    );
    // An idle line makes the client send its own echo.
    let (ex, echo) = read_msg(&mut s).await;
    assert_eq!(echo, Message::EchoRequest(vec![]));
    write_msg(&mut s, ex, &Message::EchoReply(vec![])).await;

    // A multipart reply in two parts is reassembled.
    let flow = |n: u8| Flow::new(0, 1, Match::new().with(Field::Reg(0), n.into()), vec![]);
    let stats = |n: u8| FlowStats {
        flow: flow(n),
        duration_sec: 0,
        duration_nsec: 0,
        packet_count: 0,
        byte_count: 0,
    };
    let conn2 = conn.clone();
    let dump = tokio::spawn(async move { conn2.dump_flows(FlowStatsRequest::default()).await });
    let (x, req) = read_msg(&mut s).await;
    assert!(
        matches!(req, Message::MultipartRequest(0, MultipartRequest::Flow(_))),
        "{req:?}"
    );
    write_msg(
        &mut s,
        x,
        &Message::MultipartReply(1, MultipartReply::Flow(vec![stats(1), stats(2)])),
    )
    .await;
    write_msg(
        &mut s,
        x,
        &Message::MultipartReply(0, MultipartReply::Flow(vec![stats(3)])),
    )
    .await;
    let got = dump.await.unwrap().expect("dump");
    assert_eq!(
        got.iter().map(|s| s.flow.clone()).collect::<Vec<_>>(),
        vec![flow(1), flow(2), flow(3)]
    );

    // A fire-and-forget flow-mod rejected by the switch is reported at the barrier with itself.
    let fm = Message::FlowMod(FlowMod::add(flow(9)));
    let conn2 = conn.clone();
    let fm2 = fm.clone();
    let barrier = tokio::spawn(async move {
        conn2.send(&fm2).await.expect("send");
        conn2.barrier().await
    });
    let (fx, got_fm) = read_msg(&mut s).await;
    assert_eq!(got_fm, fm);
    let (bx, b) = read_msg(&mut s).await;
    assert_eq!(b, Message::BarrierRequest);
    let err = ErrorMsg {
        ty: 5,
        code: 1,
        experimenter: None,
        data: fm.encode(fx)[..64].to_vec(),
    };
    write_msg(&mut s, fx, &Message::Error(err)).await;
    write_msg(&mut s, bx, &Message::BarrierReply).await;
    match barrier.await.unwrap() {
        Err(ConnError::Rejected(e)) => {
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].error.name(), "OFPFMFC_TABLE_FULL");
            assert_eq!(e[0].request.as_ref(), Some(&fm));
        }
        r => panic!("expected rejection, got {r:?}"),
    }

    // Unsolicited messages go to the event stream.
    let ps = PortStatus {
        reason: 2,
        port: Port {
            port_no: 3,
            name: "tap3".into(),
            ..Port::default()
        },
    };
    write_msg(&mut s, 0, &Message::PortStatus(ps.clone())).await;
    loop {
        match tokio::time::timeout(T, ev.recv()).await.expect("event") {
            Some(Event::Message(_, Message::PortStatus(p))) => {
                assert_eq!(p, ps);
                break;
            }
            Some(_) => {}
            None => panic!("closed"),
        }
    }

    // The switch goes away: pending requests fail, the client reconnects.
    let conn2 = conn.clone();
    let pending = tokio::spawn(async move { conn2.request(&Message::FeaturesRequest).await });
    let _ = read_msg(&mut s).await;
    drop(s);
    assert_eq!(pending.await.unwrap(), Err(ConnError::Disconnected));
    let mut s = accept(&l, 1 << 4).await;
    features(&mut s).await;
    loop {
        match tokio::time::timeout(T, ev.recv()).await.expect("event") {
            Some(Event::Connected(_)) => break,
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    let conn2 = conn.clone();
    let b = tokio::spawn(async move { conn2.barrier().await });
    let (x, m) = read_msg(&mut s).await;
    assert_eq!(m, Message::BarrierRequest);
    write_msg(&mut s, x, &Message::BarrierReply).await;
    b.await.unwrap().expect("barrier after reconnect");
    let _ = std::fs::remove_file(&path);
}

async fn accept_any(l: &UnixListener) -> UnixStream {
    let (s, _) = tokio::time::timeout(T, l.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    s
}

#[tokio::test]
async fn bad_target_is_refused() {
    assert!(matches!(
        Connection::start("ssl:1.2.3.4:6653"),
        Err(ConnError::BadTarget(_))
    ));
}

async fn next(ev: &mut openflow::conn::Events) -> Option<Event> {
    tokio::time::timeout(T, ev.recv()).await.expect("event")
}

#[tokio::test]
async fn events_that_do_not_fit_are_counted_as_lost() {
    let path = socket_path("lost");
    let l = UnixListener::bind(&path).expect("bind");
    let opts = Options {
        event_capacity: 2,
        ..Options::default()
    };
    let (_conn, mut ev) =
        Connection::start_with(&format!("unix:{}", path.display()), opts).expect("start");
    let mut s = accept(&l, 1 << 4).await;
    features(&mut s).await;
    // Connected takes one place; of five port announcements one more fits, four are lost.
    for no in 1..=5 {
        let port = Port {
            port_no: no,
            hw_addr: [2, 0, 0, 0, 0, no as u8],
            name: format!("p{no}"),
            config: 0,
            state: 0,
            curr: 0,
            advertised: 0,
            supported: 0,
            peer: 0,
            curr_speed: 0,
            max_speed: 0,
        };
        write_msg(
            &mut s,
            0,
            &Message::PortStatus(PortStatus { reason: 0, port }),
        )
        .await;
    }
    // An echo round trip proves the reader has handled all five.
    write_msg(&mut s, 9, &Message::EchoRequest(vec![])).await;
    assert_eq!(read_msg(&mut s).await, (9, Message::EchoReply(vec![])));
    assert!(matches!(next(&mut ev).await, Some(Event::Connected(_))));
    assert!(
        matches!(next(&mut ev).await, Some(Event::Message(_, Message::PortStatus(p))) if p.port.port_no == 1)
    );
    // The next event that finds room reports the loss first.
    write_msg(&mut s, 0, &Message::BarrierReply).await;
    assert_eq!(next(&mut ev).await, Some(Event::Lost(4)));
    assert!(matches!(
        next(&mut ev).await,
        Some(Event::Message(0, Message::BarrierReply))
    ));
    let _ = std::fs::remove_file(&path);
}
