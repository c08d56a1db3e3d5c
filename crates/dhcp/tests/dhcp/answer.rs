//! answer(): the RFC 2131 decision table of a server owning one binding.

use dhcp::{Ipv4Addr, MessageType, answer, parse_request};

use crate::builder::{CLIENT_IP, Client, SERVER_IP, lease};

const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);
const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

fn answer_to(client: Client) -> Option<MessageType> {
    answer(&parse_request(&client.frame()).unwrap(), &lease())
}

fn renewing(ciaddr: Ipv4Addr) -> Client {
    let mut client = Client::new(3, 1);
    client.ciaddr = ciaddr;
    client
}

#[test]
fn discover_gets_an_offer() {
    assert_eq!(answer_to(Client::new(1, 1)), Some(MessageType::Offer));
    // Even when the client would like another address.
    let wants_other = Client::new(1, 1).option(50, &OTHER_IP.octets());
    assert_eq!(answer_to(wants_other), Some(MessageType::Offer));
}

#[test]
fn request_selecting_us() {
    let ours = Client::new(3, 1)
        .option(50, &CLIENT_IP.octets())
        .option(54, &SERVER_IP.octets());
    assert_eq!(answer_to(ours), Some(MessageType::Ack));
    let other_ip = Client::new(3, 1)
        .option(50, &OTHER_IP.octets())
        .option(54, &SERVER_IP.octets());
    assert_eq!(answer_to(other_ip), Some(MessageType::Nak));
}

#[test]
fn request_selecting_another_server_is_ignored() {
    let other = Client::new(3, 1)
        .option(50, &CLIENT_IP.octets())
        .option(54, &OTHER_SERVER.octets());
    assert_eq!(answer_to(other), None);
}

#[test]
fn init_reboot() {
    let ours = Client::new(3, 1).option(50, &CLIENT_IP.octets());
    assert_eq!(answer_to(ours), Some(MessageType::Ack));
    let moved = Client::new(3, 1).option(50, &OTHER_IP.octets());
    assert_eq!(answer_to(moved), Some(MessageType::Nak));
}

#[test]
fn renewing_and_rebinding() {
    assert_eq!(answer_to(renewing(CLIENT_IP)), Some(MessageType::Ack));
    assert_eq!(answer_to(renewing(OTHER_IP)), Some(MessageType::Nak));
    // A request naming no address at all is sent back to INIT.
    assert_eq!(
        answer_to(renewing(Ipv4Addr::UNSPECIFIED)),
        Some(MessageType::Nak)
    );
}

#[test]
fn inform_gets_an_ack() {
    let mut inform = Client::new(8, 1);
    inform.ciaddr = OTHER_IP;
    assert_eq!(answer_to(inform), Some(MessageType::Ack));
}

#[test]
fn decline_release_and_server_messages_get_nothing() {
    let decline = Client::new(4, 1)
        .option(50, &CLIENT_IP.octets())
        .option(54, &SERVER_IP.octets());
    assert_eq!(answer_to(decline), None);
    let mut release = Client::new(7, 1).option(54, &SERVER_IP.octets());
    release.ciaddr = CLIENT_IP;
    assert_eq!(answer_to(release), None);
    for server_kind in [2, 5, 6] {
        assert_eq!(answer_to(Client::new(server_kind, 1)), None);
    }
}
