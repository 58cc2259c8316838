//! The pong world: the server side of the IPC round-trip benchmark.
//!
//! It serves the `bench` channel with raw system calls, the kernel's shortest path: one
//! `recv`, then `reply_recv` forever, echoing the four message registers of each call in a
//! zero-length reply (until ping asks it to start yielding, see
//! [`START_YIELDING`](esker_ping::START_YIELDING)). No channel runtime, no postcard: what `ping` times is the kernel.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main, heap = 4096);

/// One raw system call.
#[cfg(target_os = "none")]
#[inline(always)]
fn syscall(call: esker_abi::Syscall, args: [u64; 6]) -> (u64, [u64; 6]) {
    // SAFETY: pong holds no Rust reference into its IPC buffer (it never borrows it) and
    // passes no pointers; `recv` and `reply_recv` write nothing else.
    unsafe { esker_rt::sys::raw::syscall(call as u64, args) }
}

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_abi::{Error, Syscall};
    use esker_rt::sys;

    const BENCH: esker_rt::Declared = esker_rt::uses!("serve:bench", "receive", "status");

    let Ok(bench) = rt.slot(&BENCH) else {
        sys::exit(2)
    };
    let endpoint = u64::from(bench);
    defmt::info!("pong: serving");
    let (mut rax, mut out) = syscall(Syscall::Recv, [endpoint, 0, 0, 0, 0, 0]);
    loop {
        if rax == 0 && out[2] == esker_ping::START_YIELDING {
            // The last measurement: answer, then give the CPU back at once, forever, so
            // every `yield` of ping's is a switch here and back.
            let _ = syscall(Syscall::Reply, [0, 0, 0, 0, 0, 0]);
            loop {
                let _ = syscall(Syscall::Yield, [0; 6]);
            }
        }
        if rax == 0 {
            // out = info, badge, mr0..mr3: reply with a zero-length message carrying the
            // same registers, and wait for the next call.
            (rax, out) = syscall(
                Syscall::ReplyRecv,
                [endpoint, 0, out[2], out[3], out[4], out[5]],
            );
            continue;
        }
        let error = Error::check(rax).err().unwrap_or(Error::InvalidSyscall);
        defmt::error!("pong: serving failed: {=str}", error.describe());
        // Whatever went wrong with the reply, a plain receive starts over; if even that
        // fails the endpoint is unusable.
        (rax, out) = syscall(Syscall::Recv, [endpoint, 0, 0, 0, 0, 0]);
        if rax != 0 {
            let error = Error::check(rax).err().unwrap_or(Error::InvalidSyscall);
            defmt::error!("pong: receive failed: {=str}", error.describe());
            sys::exit(1)
        }
    }
}
