//! answer(): the RFC 8415 decision table of a server owning one binding or none.

use dhcpv6::{
    AddressLease, Answer, IaAnswer, IaKind, MessageType, StatusCode, answer, parse_request,
};

use crate::builder::{Client, bound, ip, server};

fn answer_to(client: Client, stateful: bool) -> Option<Answer> {
    answer(&parse_request(&client.frame()).unwrap(), &server(stateful))
}

fn ours(iaid: u32) -> IaAnswer {
    IaAnswer {
        kind: IaKind::Na,
        iaid,
        t1: 43_200,
        t2: 69_120,
        addresses: vec![AddressLease {
            address: bound(),
            preferred_lifetime: 86_400,
            valid_lifetime: 86_400,
        }],
        status: None,
    }
}

fn status_only(kind: IaKind, iaid: u32, status: StatusCode) -> IaAnswer {
    IaAnswer {
        kind,
        iaid,
        t1: 0,
        t2: 0,
        addresses: Vec::new(),
        status: Some(status),
    }
}

fn reply(status: Option<StatusCode>, ias: Vec<IaAnswer>, configuration: bool) -> Option<Answer> {
    Some(Answer {
        kind: MessageType::Reply,
        rapid_commit: false,
        status,
        ias,
        configuration,
    })
}

#[test]
fn solicit_is_advertised_the_binding() {
    // The address the client hints at does not matter.
    let solicit = Client::new(1, 1).ia_na(7, &[ip("2001:db8::99")]);
    assert_eq!(
        answer_to(solicit.clone(), true),
        Some(Answer {
            kind: MessageType::Advertise,
            rapid_commit: false,
            status: None,
            ias: vec![ours(7)],
            configuration: true,
        })
    );
    // Stateless: no address, and the IA says why.
    assert_eq!(
        answer_to(solicit, false).unwrap().ias,
        vec![status_only(IaKind::Na, 7, StatusCode::NoAddrsAvail)]
    );
}

#[test]
fn rapid_commit_is_honoured_when_there_is_an_address() {
    let solicit = Client::new(1, 1).ia_na(7, &[]).option(14, &[]);
    assert_eq!(
        answer_to(solicit.clone(), true),
        Some(Answer {
            kind: MessageType::Reply,
            rapid_commit: true,
            status: None,
            ias: vec![ours(7)],
            configuration: true,
        })
    );
    let advertise = answer_to(solicit, false).unwrap();
    assert_eq!(
        (advertise.kind, advertise.rapid_commit),
        (MessageType::Advertise, false)
    );
}

#[test]
fn temporary_addresses_and_prefixes_are_not_served() {
    let mut ia_pd = 3u32.to_be_bytes().to_vec();
    ia_pd.extend_from_slice(&[0; 8]);
    let solicit = Client::new(1, 1)
        .option(4, &2u32.to_be_bytes())
        .option(25, &ia_pd);
    assert_eq!(
        answer_to(solicit, true).unwrap().ias,
        vec![
            status_only(IaKind::Ta, 2, StatusCode::NoAddrsAvail),
            status_only(IaKind::Pd, 3, StatusCode::NoPrefixAvail),
        ]
    );
    let renew = Client::new(5, 1).server_id().option(4, &2u32.to_be_bytes());
    assert_eq!(
        answer_to(renew, true).unwrap().ias,
        vec![status_only(IaKind::Ta, 2, StatusCode::NoBinding)]
    );
}

#[test]
fn request_renew_rebind_get_the_binding_and_drop_other_addresses() {
    let mut expected = ours(7);
    expected.addresses.push(AddressLease {
        address: ip("2001:db8::99"),
        preferred_lifetime: 0,
        valid_lifetime: 0,
    });
    for client in [
        Client::new(3, 1).server_id(),
        Client::new(5, 1).server_id(),
        Client::new(6, 1),
    ] {
        let client = client.ia_na(7, &[bound(), ip("2001:db8::99")]);
        assert_eq!(
            answer_to(client, true),
            reply(None, vec![expected.clone()], true)
        );
    }
}

#[test]
fn without_a_binding() {
    let request = Client::new(3, 1).server_id().ia_na(7, &[]);
    assert_eq!(
        answer_to(request, false),
        reply(
            None,
            vec![status_only(IaKind::Na, 7, StatusCode::NoAddrsAvail)],
            true
        )
    );
    let renew = Client::new(5, 1).server_id().ia_na(7, &[bound()]);
    assert_eq!(
        answer_to(renew, false),
        reply(
            None,
            vec![status_only(IaKind::Na, 7, StatusCode::NoBinding)],
            true
        )
    );
    assert_eq!(
        answer_to(Client::new(6, 1).ia_na(7, &[bound()]), false),
        None
    );
    assert_eq!(
        answer_to(Client::new(4, 1).ia_na(7, &[bound()]), false),
        None
    );
}

#[test]
fn messages_for_another_server_or_without_identifiers_are_ignored() {
    let other = |kind| Client::new(kind, 1).option(2, &[0, 3, 0, 1, 2, 0, 0, 0, 0, 9]);
    for kind in [1, 3, 4, 5, 6, 8, 9, 11] {
        assert_eq!(
            answer_to(other(kind).ia_na(1, &[bound()]), true),
            None,
            "type {kind}"
        );
    }
    // Solicit, Confirm and Rebind must carry no server identifier at all.
    for kind in [1, 4, 6] {
        assert_eq!(
            answer_to(Client::new(kind, 1).server_id().ia_na(1, &[bound()]), true),
            None,
            "type {kind}"
        );
    }
    // Request, Renew, Release and Decline must carry ours.
    for kind in [3, 5, 8, 9] {
        assert_eq!(
            answer_to(Client::new(kind, 1).ia_na(1, &[]), true),
            None,
            "type {kind}"
        );
    }
    // Everything but Information-request needs a client identifier.
    for kind in [1, 3, 4, 5, 6, 8, 9] {
        let mut client = Client::bare(kind, 1);
        if ![1, 4, 6].contains(&kind) {
            client = client.server_id();
        }
        assert_eq!(
            answer_to(client.ia_na(1, &[bound()]), true),
            None,
            "type {kind}"
        );
    }
    // Server messages.
    for kind in [2, 7, 10] {
        assert_eq!(answer_to(Client::new(kind, 1), true), None, "type {kind}");
    }
}

#[test]
fn confirm_checks_the_prefix() {
    let on_link = Client::new(4, 1).ia_na(1, &[bound(), ip("2001:db8::77")]);
    assert_eq!(
        answer_to(on_link, true),
        reply(Some(StatusCode::Success), Vec::new(), false)
    );
    let moved = Client::new(4, 1).ia_na(1, &[bound(), ip("2001:db8:1::5")]);
    assert_eq!(
        answer_to(moved, true),
        reply(Some(StatusCode::NotOnLink), Vec::new(), false)
    );
    assert_eq!(
        answer_to(Client::new(4, 1).ia_na(1, &[]), true),
        None,
        "no addresses"
    );
}

#[test]
fn release_and_decline_succeed() {
    for kind in [8, 9] {
        let client = Client::new(kind, 1).server_id().ia_na(1, &[bound()]);
        assert_eq!(
            answer_to(client.clone(), true),
            reply(Some(StatusCode::Success), Vec::new(), false)
        );
        assert_eq!(
            answer_to(client, false),
            reply(
                Some(StatusCode::Success),
                vec![status_only(IaKind::Na, 1, StatusCode::NoBinding)],
                false
            )
        );
    }
}

#[test]
fn information_request_gets_configuration() {
    for stateful in [true, false] {
        assert_eq!(
            answer_to(Client::new(11, 1), stateful),
            reply(None, Vec::new(), true)
        );
        assert_eq!(
            answer_to(Client::bare(11, 1), stateful),
            reply(None, Vec::new(), true),
            "anonymous"
        );
        assert_eq!(
            answer_to(Client::new(11, 1).server_id(), stateful),
            reply(None, Vec::new(), true)
        );
        assert_eq!(
            answer_to(Client::new(11, 1).ia_na(1, &[]), stateful),
            None,
            "with an IA"
        );
    }
}
