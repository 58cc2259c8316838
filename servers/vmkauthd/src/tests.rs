//! vmkauthd tests: ticket issue/verify/expiry with a fake clock, and the channel rules.

use esker_protocols::common::truncated;
use esker_rt::ChannelError;
use esker_rt::abi::badge;
use esker_rt::channel::loopback::Loopback;
use proptest::prelude::*;

use super::*;

/// A clock the test moves by hand.
#[derive(Debug, Default)]
struct FakeClock(u64);

impl Clock for FakeClock {
    fn now_secs(&self) -> u64 {
        self.0
    }
}

const KEY: [u8; 32] = [0x5a; 32];
/// hostd may do everything; storage may only check status and verify tickets.
const HOSTD: u64 = badge::encode(4, 0b111);
const STORAGE: u64 = badge::encode(2, 0b101);

fn user(name: &str) -> UserName {
    truncated(name)
}

#[test]
fn issued_tickets_verify_until_they_expire() {
    let mut authority = TicketAuthority::new(KEY);
    let ticket = authority.issue(&user("root"), 60, 1000).unwrap();
    assert_eq!(
        (ticket.issued_at, ticket.expires_at, ticket.serial),
        (1000, 1060, 1)
    );
    assert_eq!(authority.verify(&ticket, 1000), Ok(()));
    assert_eq!(authority.verify(&ticket, 1059), Ok(()));
    assert_eq!(authority.verify(&ticket, 1060), Err(TicketError::Expired));
    assert_eq!(
        authority.verify(&ticket, u64::MAX),
        Err(TicketError::Expired)
    );
    assert_eq!(
        authority.issue(&user("root"), 60, 1000).unwrap().serial,
        2,
        "serials are unique"
    );
}

#[test]
fn lifetimes_are_clamped_and_must_be_positive() {
    let mut authority = TicketAuthority::new(KEY);
    let ticket = authority.issue(&user("admin"), u32::MAX, 5).unwrap();
    assert_eq!(ticket.expires_at, 5 + u64::from(MAX_LIFETIME_SECS));
    assert_eq!(
        authority.issue(&user("admin"), 0, 5),
        Err(TicketError::InvalidLifetime)
    );
    let late = authority.issue(&user("admin"), 10, u64::MAX - 1).unwrap();
    assert_eq!(late.expires_at, u64::MAX, "expiry saturates");
}

#[test]
fn user_names_must_be_printable_ascii() {
    let mut authority = TicketAuthority::new(KEY);
    for bad in ["", "with space", "tab\t", "naïve"] {
        assert_eq!(
            authority.issue(&user(bad), 60, 0),
            Err(TicketError::InvalidUser),
            "{bad:?}"
        );
    }
}

#[test]
fn any_change_to_a_ticket_makes_it_forged() {
    let mut authority = TicketAuthority::new(KEY);
    let ticket = authority.issue(&user("root"), 60, 100).unwrap();
    let mut mac = ticket.mac;
    mac[31] ^= 1;
    let changes = [
        Ticket {
            user: user("toor"),
            ..ticket.clone()
        },
        Ticket {
            expires_at: ticket.expires_at + 1000,
            ..ticket.clone()
        },
        Ticket {
            issued_at: 99,
            ..ticket.clone()
        },
        Ticket {
            serial: 7,
            ..ticket.clone()
        },
        Ticket {
            mac,
            ..ticket.clone()
        },
    ];
    for changed in &changes {
        assert_eq!(
            authority.verify(changed, 100),
            Err(TicketError::Forged),
            "{changed:?}"
        );
    }
    let other = TicketAuthority::new([0xa5; 32]);
    assert_eq!(
        other.verify(&ticket, 100),
        Err(TicketError::Forged),
        "another key"
    );
}

#[test]
fn the_server_issues_verifies_and_counts_through_its_channel() {
    let server = Vmkauthd::new(KEY, FakeClock(500));
    let mut hostd = Loopback::<Auth, _>::client(server, HOSTD);
    let Ok(Reply::Ticket(ticket)) = hostd.call(&Request::IssueTicket {
        user: user("root"),
        lifetime_secs: 30,
    }) else {
        panic!("hostd gets a ticket");
    };
    assert_eq!(ticket.expires_at, 530);

    let verify = Request::VerifyTicket {
        ticket: ticket.clone(),
    };
    hostd.transport_mut().set_badge(STORAGE);
    assert_eq!(
        hostd.call(&verify),
        Ok(Reply::Valid {
            user: user("root"),
            expires_at: 530
        })
    );
    assert_eq!(
        hostd.call(&Request::IssueTicket {
            user: user("eve"),
            lifetime_secs: 30
        }),
        Err(ChannelError::Denied),
        "storage may not issue tickets"
    );

    hostd.transport_mut().service_mut().clock_mut().0 = 530;
    assert_eq!(
        hostd.call(&verify),
        Ok(Reply::Refused(TicketError::Expired))
    );

    let status = hostd.status().unwrap();
    assert_eq!(status.name.as_str(), "vmkauthd");
    assert_eq!(status.state, ServerState::Ready);
    let expected: [(&str, u64); 6] = [
        ("requests", 4),
        ("denied", 1),
        ("malformed", 0),
        ("tickets_issued", 1),
        ("tickets_verified", 1),
        ("tickets_refused", 1),
    ];
    for (name, value) in expected {
        assert_eq!(status.counter(name), Some(value), "{name}");
    }
}

#[test]
fn the_key_is_never_printed() {
    let text = std::format!("{:?}", TicketAuthority::new(KEY));
    assert!(!text.contains("90"), "{text}");
}

proptest! {
    /// Tickets nobody issued never verify, whatever their fields.
    #[test]
    fn made_up_tickets_are_forged(
        name in "[a-z]{1,32}",
        serial in any::<u64>(),
        issued_at in any::<u64>(),
        expires_at in any::<u64>(),
        mac in any::<[u8; 32]>(),
    ) {
        let authority = TicketAuthority::new(KEY);
        let ticket = Ticket { user: user(&name), serial, issued_at, expires_at, mac };
        prop_assert_eq!(authority.verify(&ticket, 0), Err(TicketError::Forged));
    }

    /// Flipping any one bit of a genuine ticket's authenticator makes it forged.
    #[test]
    fn flipped_bits_are_caught(bit in 0usize..256, now in 0u64..1_000_000) {
        let mut authority = TicketAuthority::new(KEY);
        let mut ticket = authority.issue(&user("root"), 600, now).unwrap();
        ticket.mac[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(authority.verify(&ticket, now), Err(TicketError::Forged));
    }
}

#[test]
fn callers_without_the_status_bit_are_denied_and_malformed_requests_refused() {
    esker_rt::channel::loopback::assert_refuses_denied_and_malformed::<Auth, _>(
        || Vmkauthd::new(KEY, FakeClock(0)),
        3,
    );
}
