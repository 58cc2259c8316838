//! The 8254 programmable interval timer (ports 0x40–0x43), clocked at 1.193182 MHz.
//!
//! Nothing here ticks. Each channel remembers when its current *segment* of counting began
//! (`start_ns`) and at which *phase* (input clocks counted since the count was loaded), so
//! its count and output at any guest time `now_ns` are a function of that time. Every call
//! takes `now_ns`; there is no hidden clock.
//!
//! Channel 0 drives IRQ 0: [`Pit::irq0_edges`] reports the rising edges of its output since
//! the last call and [`Pit::next_event_ns`] when the next one is due. Channel 2's gate and
//! output are wired to port 0x61 ([`Pit::set_gate2`], [`Pit::out2`]). Channel 1 (DRAM
//! refresh on old PCs) counts like the others but drives nothing.
//!
//! Modes 0–5 are modelled (6 and 7 alias 2 and 3), with lobyte/hibyte/lohi access, the
//! counter-latch and read-back commands, BCD counting, and gate semantics per mode: modes
//! 0 and 4 pause while the gate is low, modes 2 and 3 stop and restart on its rising edge,
//! modes 1 and 5 are triggered by the rising edge. A count of 0 means 65536 (10000 in BCD).
//! A new count in modes 2 and 3 takes effect when the current period ends.

/// The PIT's input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// At most this many IRQ 0 edges are reported by one [`Pit::irq0_edges`] call; a guest that
/// was descheduled for a long time gets a few ticks, not a storm.
pub const MAX_IRQ0_EDGES_PER_CALL: u32 = 4;

const NS_PER_S: u128 = 1_000_000_000;

/// How a channel's count register is read and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Low,
    High,
    LowHigh,
}

impl Access {
    fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            1 => Access::Low,
            2 => Access::High,
            _ => Access::LowHigh,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Access::Low => 1,
            Access::High => 2,
            Access::LowHigh => 3,
        }
    }
}

/// One counter.
#[derive(Clone, Debug)]
struct Channel {
    mode: u8,
    access: Access,
    bcd: bool,
    gate: bool,
    /// The count register (CR): what the guest wrote, as a number of clocks (1..=65536).
    reload: u32,
    /// The count loaded into the counting element for the current segment.
    active: u32,
    /// The period still running out before `active` takes over (modes 2/3, negative phase).
    previous: u32,
    /// A count has been loaded since the last control word.
    loaded: bool,
    /// Modes 1/5: a gate trigger has started counting since the count was loaded.
    triggered: bool,
    /// Whether the phase advances with time (else it is frozen at `start_phase`).
    running: bool,
    start_ns: u64,
    /// Phase at `start_ns`. Negative: clocks left of the `previous` period.
    start_phase: i64,
    /// Phase up to which output edges have been counted into `pending_edges`.
    edges_counted_to: i64,
    pending_edges: u64,
    /// A new count waits to be loaded (status bit 6).
    null_count: bool,
    /// lohi writes: the low byte arrived and the high byte is next.
    write_high_next: bool,
    partial_low: u8,
    /// lohi reads (unlatched): the high byte is next.
    read_high_next: bool,
    latched_count: Option<u16>,
    latched_high_next: bool,
    latched_status: Option<u8>,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Self {
            mode: 0,
            access: Access::LowHigh,
            bcd: false,
            gate,
            reload: 0x1_0000,
            active: 0x1_0000,
            previous: 0x1_0000,
            loaded: false,
            triggered: false,
            running: false,
            start_ns: 0,
            start_phase: 0,
            edges_counted_to: 0,
            pending_edges: 0,
            null_count: true,
            write_high_next: false,
            partial_low: 0,
            read_high_next: false,
            latched_count: None,
            latched_high_next: false,
            latched_status: None,
        }
    }

    fn is_periodic(&self) -> bool {
        matches!(self.mode, 2 | 3)
    }

    /// Input clocks counted at `now_ns`, or `None` if the channel has not started.
    fn phase(&self, now_ns: u64) -> Option<i64> {
        if !self.loaded || (matches!(self.mode, 1 | 5) && !self.triggered) {
            return None;
        }
        if !self.running {
            return Some(self.start_phase);
        }
        let elapsed = u128::from(now_ns.saturating_sub(self.start_ns));
        let ticks = i64::try_from(elapsed * u128::from(PIT_HZ) / NS_PER_S).unwrap_or(i64::MAX);
        Some(self.start_phase.saturating_add(ticks))
    }

    /// For periodic modes: the period length and position within it at `phase`.
    fn period_position(&self, phase: i64) -> (i64, i64) {
        if phase < 0 {
            let previous = i64::from(self.previous);
            (previous, (previous + phase).max(0))
        } else {
            let period = i64::from(self.active);
            (period, phase % period)
        }
    }

    /// Rising output edges from the segment start up to and including `phase`.
    fn edges_through(&self, phase: i64) -> u64 {
        let count = i64::from(self.active);
        let at_or_after = |edge: i64| u64::from(phase >= edge);
        match self.mode {
            0 | 1 => at_or_after(count),
            4 | 5 => at_or_after(count + 1),
            _ if phase < 0 => 0,
            // Periodic: an edge at each reload; the one at phase 0 only if a previous
            // period ran out there.
            _ => u64::from(self.start_phase < 0) + (phase / count) as u64,
        }
    }

    /// The first rising edge strictly after `phase`, if any.
    fn next_edge_after(&self, phase: i64) -> Option<i64> {
        let count = i64::from(self.active);
        let once = |edge: i64| (edge > phase).then_some(edge);
        match self.mode {
            0 | 1 => once(count),
            4 | 5 => once(count + 1),
            _ if phase < 0 => Some(0),
            _ => Some((phase / count + 1) * count),
        }
    }

    /// Counts the edges up to `now_ns` into `pending_edges`.
    fn collect_edges(&mut self, now_ns: u64) {
        if let Some(phase) = self.phase(now_ns) {
            let new = self
                .edges_through(phase)
                .saturating_sub(self.edges_through(self.edges_counted_to));
            self.pending_edges = self.pending_edges.saturating_add(new);
            self.edges_counted_to = self.edges_counted_to.max(phase);
        }
    }

    /// Begins a new segment at `now_ns`, at `phase`.
    fn start_segment(&mut self, now_ns: u64, phase: i64, running: bool) {
        self.start_ns = now_ns;
        self.start_phase = phase;
        self.edges_counted_to = phase;
        self.running = running;
    }

    /// The counting element's value at `now_ns`, as the guest reads it.
    fn count(&self, now_ns: u64) -> u16 {
        let Some(phase) = self.phase(now_ns) else {
            return self.encode(self.reload);
        };
        let value = if self.is_periodic() {
            let (period, position) = self.period_position(phase);
            if self.mode == 2 {
                period - position
            } else {
                // Square wave: the count runs down by two through each half period.
                let high_half = (period + 1) / 2;
                let into_half = if position < high_half {
                    position
                } else {
                    position - high_half
                };
                ((period - 2 * into_half) & !1).max(2)
            }
        } else {
            // One-shot modes count down and wrap past zero.
            let modulus = if self.bcd { 10_000 } else { 0x1_0000 };
            (i64::from(self.active) - phase).rem_euclid(modulus)
        };
        self.encode(u32::try_from(value).unwrap_or(0))
    }

    /// The channel's OUT pin at `now_ns`.
    fn out(&self, now_ns: u64) -> bool {
        let phase = self.phase(now_ns);
        let count = i64::from(self.active);
        match self.mode {
            0 => phase.is_some_and(|p| p >= count),
            1 => phase.is_none_or(|p| p >= count),
            4 | 5 => phase != Some(count),
            _ => {
                let Some(phase) = phase.filter(|_| self.running) else {
                    return true; // stopped by the gate or not yet loaded: OUT high
                };
                let (period, position) = self.period_position(phase);
                if self.mode == 2 {
                    position != period - 1 || period == 1
                } else {
                    position < (period + 1) / 2
                }
            }
        }
    }

    fn status(&self, now_ns: u64) -> u8 {
        let out = if self.out(now_ns) { 0x80 } else { 0 };
        // A periodic count written mid-period moves into the counter when that period ends.
        let transferred = self.is_periodic()
            && self.start_phase < 0
            && self.phase(now_ns).is_some_and(|p| p >= 0);
        let null = self.null_count && !transferred;
        out | if null { 0x40 } else { 0 }
            | self.access.bits() << 4
            | self.mode << 1
            | u8::from(self.bcd)
    }

    /// A count value (1..=65536 clocks) as the 16 bits the guest sees.
    fn encode(&self, value: u32) -> u16 {
        if self.bcd {
            let v = value % 10_000;
            (((v / 1000) << 12) | ((v / 100 % 10) << 8) | ((v / 10 % 10) << 4) | (v % 10)) as u16
        } else {
            value as u16
        }
    }

    /// The 16 bits the guest wrote, as a count of clocks (0 means the maximum).
    fn decode(&self, raw: u16) -> u32 {
        let raw = u32::from(raw);
        if self.bcd {
            let digits = (raw >> 12) * 1000
                + ((raw >> 8) & 0xf) * 100
                + ((raw >> 4) & 0xf) * 10
                + (raw & 0xf);
            if digits == 0 { 10_000 } else { digits }
        } else if raw == 0 {
            0x1_0000
        } else {
            raw
        }
    }

    fn write_control(&mut self, control: u8, now_ns: u64) {
        self.collect_edges(now_ns);
        self.access = Access::from_bits(control >> 4);
        self.mode = match (control >> 1) & 7 {
            6 => 2,
            7 => 3,
            mode => mode,
        };
        self.bcd = control & 1 != 0;
        self.loaded = false;
        self.triggered = false;
        self.running = false;
        self.null_count = true;
        self.write_high_next = false;
        self.read_high_next = false;
        self.latched_count = None;
        self.latched_status = None;
    }

    fn write_count_byte(&mut self, value: u8, now_ns: u64) {
        let raw = match self.access {
            Access::Low => u16::from(value),
            Access::High => u16::from(value) << 8,
            Access::LowHigh if !self.write_high_next => {
                self.partial_low = value;
                self.write_high_next = true;
                if self.mode == 0 {
                    // Mode 0: the first byte of a new count stops counting, OUT goes low.
                    self.collect_edges(now_ns);
                    self.loaded = false;
                }
                return;
            }
            Access::LowHigh => {
                self.write_high_next = false;
                u16::from_le_bytes([self.partial_low, value])
            }
        };
        self.reload = self.decode(raw);
        self.load_count(now_ns);
    }

    /// A complete count reached the count register: load it as the mode prescribes.
    fn load_count(&mut self, now_ns: u64) {
        self.collect_edges(now_ns);
        self.null_count = true;
        match self.mode {
            1 | 5 if self.loaded => {} // used at the next trigger
            1 | 5 => {
                self.loaded = true;
                self.triggered = false;
            }
            2 | 3 if self.loaded && self.running => {
                // The running period completes first; then the new count takes over.
                let phase = self.phase(now_ns).unwrap_or(0);
                let (period, position) = self.period_position(phase);
                self.previous = u32::try_from(period).unwrap_or(0x1_0000);
                self.active = self.reload;
                self.start_segment(now_ns, -(period - position), true);
            }
            2 | 3 if self.loaded => {} // gate low: loaded at the gate's rising edge
            _ => {
                self.loaded = true;
                self.active = self.reload;
                self.null_count = false;
                self.start_segment(now_ns, 0, self.gate);
            }
        }
    }

    fn set_gate(&mut self, gate: bool, now_ns: u64) {
        if gate == self.gate {
            return;
        }
        self.collect_edges(now_ns);
        self.gate = gate;
        let rising = gate;
        match self.mode {
            0 | 4 if self.loaded => {
                // Counting pauses while the gate is low.
                let phase = self.phase(now_ns).unwrap_or(0);
                self.start_segment(now_ns, phase, gate);
            }
            2 | 3 if self.loaded => {
                // Low stops the counter (OUT high); the rising edge reloads it.
                if rising {
                    self.active = self.reload;
                    self.null_count = false;
                }
                self.start_segment(now_ns, 0, rising);
            }
            1 | 5 if self.loaded && rising => {
                self.triggered = true;
                self.active = self.reload;
                self.null_count = false;
                self.start_segment(now_ns, 0, true);
            }
            _ => {}
        }
    }

    fn latch_count(&mut self, now_ns: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count(now_ns));
            self.latched_high_next = false;
        }
    }

    fn latch_status(&mut self, now_ns: u64) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status(now_ns));
        }
    }

    fn read(&mut self, now_ns: u64) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        if let Some(latched) = self.latched_count {
            let [low, high] = latched.to_le_bytes();
            return match self.access {
                Access::Low => {
                    self.latched_count = None;
                    low
                }
                Access::High => {
                    self.latched_count = None;
                    high
                }
                Access::LowHigh if !self.latched_high_next => {
                    self.latched_high_next = true;
                    low
                }
                Access::LowHigh => {
                    self.latched_count = None;
                    high
                }
            };
        }
        let [low, high] = self.count(now_ns).to_le_bytes();
        match self.access {
            Access::Low => low,
            Access::High => high,
            Access::LowHigh => {
                self.read_high_next = !self.read_high_next;
                if self.read_high_next { low } else { high }
            }
        }
    }
}

/// The emulated 8254.
#[derive(Clone, Debug)]
pub struct Pit {
    channels: [Channel; 3],
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// A PIT at power-on: no channel counting; gates of channels 0 and 1 tied high, channel
    /// 2's low until port 0x61 raises it.
    pub fn new() -> Self {
        Self {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
        }
    }

    /// Reads port 0x40 + `offset` (0–2: a channel's count or latched value; 3: the write-only
    /// control register, reading 0xff).
    pub fn read(&mut self, offset: u8, now_ns: u64) -> u8 {
        match self.channels.get_mut(usize::from(offset)) {
            Some(channel) => channel.read(now_ns),
            None => 0xff,
        }
    }

    /// Writes port 0x40 + `offset` (0–2: a channel's count; 3: a control word).
    pub fn write(&mut self, offset: u8, value: u8, now_ns: u64) {
        if let Some(channel) = self.channels.get_mut(usize::from(offset)) {
            channel.write_count_byte(value, now_ns);
            return;
        }
        if offset != 3 {
            return;
        }
        let select = usize::from(value >> 6);
        if select == 3 {
            self.read_back(value, now_ns);
        } else if (value >> 4) & 3 == 0 {
            self.channels[select].latch_count(now_ns);
        } else {
            self.channels[select].write_control(value, now_ns);
        }
    }

    /// Read-back command: latch count and/or status of each selected channel.
    fn read_back(&mut self, command: u8, now_ns: u64) {
        let latch_count = command & 0x20 == 0;
        let latch_status = command & 0x10 == 0;
        for (index, channel) in self.channels.iter_mut().enumerate() {
            if command & (2 << index) == 0 {
                continue;
            }
            // Status first: it reflects the state before any count is latched.
            if latch_status {
                channel.latch_status(now_ns);
            }
            if latch_count {
                channel.latch_count(now_ns);
            }
        }
    }

    /// Sets channel 2's gate (port 0x61 bit 0).
    pub fn set_gate2(&mut self, gate: bool, now_ns: u64) {
        self.channels[2].set_gate(gate, now_ns);
    }

    /// Channel 2's gate.
    pub fn gate2(&self) -> bool {
        self.channels[2].gate
    }

    /// Channel 2's output (port 0x61 bit 5).
    pub fn out2(&self, now_ns: u64) -> bool {
        self.channels[2].out(now_ns)
    }

    /// Rising edges of channel 0's output since the last call, at most
    /// [`MAX_IRQ0_EDGES_PER_CALL`] (edges beyond that are dropped, not deferred).
    pub fn irq0_edges(&mut self, now_ns: u64) -> u32 {
        let channel = &mut self.channels[0];
        channel.collect_edges(now_ns);
        let edges = core::mem::take(&mut channel.pending_edges);
        u32::try_from(edges)
            .unwrap_or(u32::MAX)
            .min(MAX_IRQ0_EDGES_PER_CALL)
    }

    /// Guest time of the next rising edge of channel 0's output not yet reported by
    /// [`Self::irq0_edges`]: `now_ns` itself if one is already due, `None` if channel 0 will
    /// not produce another edge as programmed.
    pub fn next_event_ns(&self, now_ns: u64) -> Option<u64> {
        let channel = &self.channels[0];
        if channel.pending_edges > 0 {
            return Some(now_ns);
        }
        let phase = channel.phase(now_ns)?.max(channel.edges_counted_to);
        if channel.edges_through(phase) > channel.edges_through(channel.edges_counted_to) {
            return Some(now_ns);
        }
        if !channel.running {
            return None;
        }
        let edge = channel.next_edge_after(phase)?;
        // The earliest time at which the phase reaches `edge`.
        let clocks = u128::try_from(edge.saturating_sub(channel.start_phase)).unwrap_or(0);
        let delay = (clocks * NS_PER_S).div_ceil(u128::from(PIT_HZ));
        let at = u128::from(channel.start_ns).saturating_add(delay);
        Some(u64::try_from(at).unwrap_or(u64::MAX).max(now_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn program(pit: &mut Pit, channel: u8, mode: u8, count: u16, now_ns: u64) {
        pit.write(3, (channel << 6) | 0x30 | (mode << 1), now_ns);
        let [low, high] = count.to_le_bytes();
        pit.write(channel, low, now_ns);
        pit.write(channel, high, now_ns);
    }

    fn read_lohi(pit: &mut Pit, channel: u8, now_ns: u64) -> u16 {
        let low = pit.read(channel, now_ns);
        let high = pit.read(channel, now_ns);
        u16::from_le_bytes([low, high])
    }

    #[test]
    fn mode2_one_millisecond_gives_ten_edges_in_ten_milliseconds() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 1193, 0);
        let mut edges = 0;
        let mut now = 0;
        while now < 10 * MS {
            now += MS / 4;
            edges += pit.irq0_edges(now);
        }
        assert_eq!(edges, 10);
        // And the next edge is predicted within one period, exactly when it happens.
        let next = pit.next_event_ns(now).unwrap();
        assert!(next > now && next <= now + MS, "{next}");
        assert_eq!(pit.irq0_edges(next - 1), 0);
        assert_eq!(pit.irq0_edges(next), 1);
    }

    #[test]
    fn a_long_absence_yields_only_a_few_edges() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 1193, 0);
        assert_eq!(pit.irq0_edges(10_000 * MS), MAX_IRQ0_EDGES_PER_CALL);
        assert_eq!(pit.irq0_edges(10_000 * MS), 0);
        let next = pit.next_event_ns(10_000 * MS).unwrap();
        assert!(next > 10_000 * MS && next <= 10_001 * MS);
    }

    #[test]
    fn mode3_square_wave_edges_and_output() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 3, 0, 0); // 65536: ~54.9 ms, the BIOS's 18.2 Hz tick
        assert!(pit.channels[0].out(1));
        assert!(!pit.channels[0].out(30 * MS));
        assert_eq!(pit.irq0_edges(54 * MS), 0);
        assert_eq!(pit.irq0_edges(56 * MS), 1);
        assert_eq!(pit.irq0_edges(110 * MS), 1);
    }

    #[test]
    fn mode0_and_mode4_one_shots_fire_once() {
        for mode in [0, 4] {
            let mut pit = Pit::new();
            program(&mut pit, 0, mode, 11932, 0); // 10 ms
            let next = pit.next_event_ns(0).unwrap();
            assert!(
                (9_990_000..10_010_000).contains(&next),
                "mode {mode}: {next}"
            );
            assert_eq!(pit.irq0_edges(next - 1), 0);
            assert_eq!(pit.irq0_edges(next), 1);
            assert_eq!(pit.next_event_ns(next), None);
            assert_eq!(pit.irq0_edges(100 * MS), 0);
            // Re-arming (what Linux's oneshot clockevent does) fires again.
            program(&mut pit, 0, mode, 1193, 100 * MS);
            assert_eq!(pit.irq0_edges(102 * MS), 1);
        }
    }

    #[test]
    fn linux_oneshot_rewrites_count_without_control_word() {
        let mut pit = Pit::new();
        pit.write(3, 0x38, 0); // channel 0, lohi, mode 4
        pit.write(0, 0xa9, 0);
        pit.write(0, 0x04, 0); // 1193
        pit.write(0, 0xa9, MS / 2); // new count before the old one fired
        pit.write(0, 0x04, MS / 2);
        assert_eq!(
            pit.irq0_edges(MS + MS / 4),
            0,
            "the first countdown was replaced"
        );
        assert_eq!(pit.irq0_edges(2 * MS), 1);
    }

    #[test]
    fn channel2_one_shot_drives_port61_bit5_for_tsc_calibration() {
        let mut pit = Pit::new();
        // Linux's pit_calibrate_tsc: gate high, mode 0, 50 ms latch, poll OUT.
        pit.set_gate2(true, 0);
        program(&mut pit, 2, 0, 59659, 0);
        assert!(!pit.out2(0));
        assert!(!pit.out2(49 * MS));
        assert!(pit.out2(51 * MS));
        assert!(pit.out2(200 * MS), "OUT stays high in mode 0");
    }

    #[test]
    fn quick_pit_calibrate_reads_a_falling_msb() {
        let mut pit = Pit::new();
        pit.set_gate2(true, 0);
        program(&mut pit, 2, 0, 0xffff, 0);
        let msb_at = |pit: &mut Pit, now| read_lohi(pit, 2, now) >> 8;
        assert_eq!(msb_at(&mut pit, 1000), 0xff);
        // 256 clocks per MSB step, ~214.5 us each.
        assert_eq!(msb_at(&mut pit, 215_000), 0xfe);
        assert_eq!(msb_at(&mut pit, 10 * 214_550 + 1000), 0xff - 10);
    }

    #[test]
    fn gate_low_pauses_mode0() {
        let mut pit = Pit::new();
        pit.set_gate2(true, 0);
        program(&mut pit, 2, 0, 11932, 0); // 10 ms
        pit.set_gate2(false, 5 * MS);
        assert!(!pit.out2(50 * MS), "paused while the gate is low");
        pit.set_gate2(true, 50 * MS);
        assert!(!pit.out2(54 * MS));
        assert!(pit.out2(56 * MS));
    }

    #[test]
    fn counter_latch_freezes_the_value_until_read() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 10000, 0);
        pit.write(3, 0x00, MS); // latch channel 0
        let latched = read_lohi(&mut pit, 0, 5 * MS);
        // 1 ms = 1193 clocks into a 10000-clock period.
        assert!((8805..=8808).contains(&latched), "{latched}");
        let live = read_lohi(&mut pit, 0, 5 * MS);
        assert!((4033..=4036).contains(&live), "{live}");
    }

    #[test]
    fn read_back_returns_status_then_count() {
        let mut pit = Pit::new();
        pit.write(3, 0xb0, 0); // channel 2, lohi, mode 0: control word only
        pit.write(3, 0xe8, 0); // read back status of channel 2
        assert_eq!(
            pit.read(2, 0),
            0x40 | 0x30,
            "OUT low, null count, lohi, mode 0"
        );
        pit.set_gate2(true, 0);
        pit.write(2, 100, 0);
        pit.write(2, 0, 0);
        pit.write(3, 0xc8, MS); // status and count of channel 2
        assert_eq!(pit.read(2, MS), 0x80 | 0x30, "OUT high after 100 clocks");
        let count = read_lohi(&mut pit, 2, MS);
        assert_eq!(count, (100u32 + 0x1_0000 - 1193) as u16);
    }

    #[test]
    fn lobyte_and_hibyte_access() {
        let mut pit = Pit::new();
        pit.write(3, 0x14, 0); // channel 0, lobyte, mode 2
        pit.write(0, 200, 0);
        assert_eq!(pit.read(0, 0), 200);
        pit.write(3, 0x24, 0); // channel 0, hibyte, mode 2
        pit.write(0, 0x10, 0); // 0x1000 clocks
        assert_eq!(pit.read(0, 0), 0x10);
        assert_eq!(
            pit.next_event_ns(0),
            Some((4096 * 1_000_000_000u64).div_ceil(PIT_HZ))
        );
    }

    #[test]
    fn mode2_new_count_applies_at_the_end_of_the_period() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 11932, 0); // 10 ms periods
        let [low, high] = 1193u16.to_le_bytes();
        pit.write(0, low, 3 * MS);
        pit.write(0, high, 3 * MS);
        assert_eq!(pit.irq0_edges(9 * MS), 0, "the 10 ms period still runs");
        assert_eq!(pit.irq0_edges(10_100_000), 1);
        assert_eq!(pit.irq0_edges(11_100_000), 1, "then 1 ms periods");
        assert_eq!(pit.irq0_edges(12_100_000), 1);
    }

    #[test]
    fn bcd_counting() {
        let mut pit = Pit::new();
        pit.write(3, 0x35, 0); // channel 0, lohi, mode 2, BCD
        pit.write(0, 0x00, 0);
        pit.write(0, 0x10, 0); // 1000 decimal
        assert_eq!(pit.read(0, 0), 0x00);
        assert_eq!(pit.read(0, 0), 0x10);
        pit.write(3, 0x00, 1_000_000_000 / PIT_HZ * 10 + 1); // ~10 clocks later
        assert_eq!(read_lohi(&mut pit, 0, 0), 0x0990);
    }
}
