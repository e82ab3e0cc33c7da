use super::*;

fn deciding(nth: Option<u32>) -> Deciding {
    Deciding {
        rule: Rule::failing_with(libc::EIO, nth),
        path_arg: None,
    }
}

fn pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::empty(),
    )
    .unwrap()
}

fn call(id: u64) -> Notif {
    Notif {
        id,
        pid: std::process::id(),
        nr: libc::SYS_fdatasync as i32,
        ..Notif::default()
    }
}

#[test]
fn the_watchdog_passes_and_counts_all_but_the_nth_call_which_it_hands_to_chaos() {
    let (socket, _) = pair();
    let mut state = State::new();
    let pass = |counted| Judged::Pass { counted };
    let hit = |tgid, nth| Judged::Hit {
        tgid,
        nth,
        path: None,
    };
    assert_eq!(state.judge(&call(1)), pass(None), "no rule yet");
    assert!(state.passed.is_empty(), "nothing counted without a rule");
    let rule = serde_json::to_vec(&deciding(Some(3))).unwrap();
    state.apply(
        Message::Decide(serde_json::from_slice(&rule).unwrap()),
        &socket,
    );
    let me = std::process::id();
    let first: Vec<_> = (1..=2).map(|id| state.judge(&call(id))).collect();
    assert_eq!(first, [pass(Some(me)), pass(Some(me))]);
    // The second call's caller was interrupted before the answer: it will make the
    // call again, and that one is the second.
    state.unpass(me);
    let then: Vec<_> = (3..=5).map(|id| state.judge(&call(id))).collect();
    assert_eq!(then, [pass(Some(me)), hit(me, 3), pass(Some(me))]);
    assert_eq!(state.passed.get(&me), Some(&3));
    state.apply(Message::Exited(me), &socket);
    let again: Vec<_> = (6..=8).map(|id| state.judge(&call(id))).collect();
    assert_eq!(again[2], hit(me, 3), "an exited pid starts over");
}

#[test]
fn hits_and_batches_cross_the_socket_intact() {
    let notif = Notif {
        id: 7,
        pid: 42,
        nr: 2,
        arch: 0xc000_003e,
        args: [1, 2, 3, 4, 5, 6],
        ..Notif::default()
    };
    let hit = encode_hit(&notif, 40, 1000, Some("/data/x"));
    assert_eq!(
        parse_from_watchdog(&hit),
        Some(FromWatchdog::Hit {
            notif,
            tgid: 40,
            nth: 1000,
            path: Some("/data/x".into())
        })
    );
    let (mine, theirs) = pair();
    let mut state = State::new();
    state
        .passed
        .extend((0..BATCH_PAIRS as u32 + 1).map(|p| (p, p + 1)));
    state.apply(Message::StopDeciding, &theirs);
    let dog = Watchdog {
        pid: nix::unistd::Pid::this(),
        socket: mine,
    };
    let mut pairs = Vec::new();
    loop {
        match dog.next_message().unwrap().unwrap() {
            FromWatchdog::Passed(p) => pairs.extend(p),
            FromWatchdog::Stopped => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pairs.len(), BATCH_PAIRS + 1, "two batches, then the stop");
    assert_eq!(
        pairs[BATCH_PAIRS],
        (BATCH_PAIRS as u32, BATCH_PAIRS as u32 + 1)
    );
    assert_eq!(
        parse_from_watchdog(b"P123"),
        None,
        "a torn batch is refused"
    );
}
