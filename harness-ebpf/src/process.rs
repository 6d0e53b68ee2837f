//! What the enclosed processes run: forks, execs and exits, reported to the daemon for the
//! session's ledger. Raw tracepoints fire for every process on the host; only those whose
//! cgroup lies under the engine's enclosure are reported. Structure fields are read at the
//! offsets the daemon found in the running kernel's BTF.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_uid_gid, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_ktime_get_ns, bpf_probe_read_user},
    },
    macros::{map, raw_tracepoint},
    maps::{Array, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use harness_common::{process, ExecEvent, ProcessConfig, ProcessEvent, ARGV_MAX, CONFIG_INDEX};

#[map]
static PROCESS_CONFIG: Array<ProcessConfig> = Array::with_max_entries(1, 0);

/// Forks, execs and exits, for the daemon to record.
#[map]
static PROCESSES: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Events the ring buffer had no room for (per CPU): the daemon says so in the ledger.
#[map]
static PROCESSES_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn harness_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn harness_exec(ctx: RawTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

/// `sched_process_exit(struct task_struct *p, …)`.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn harness_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), i32> {
    let config = config()?;
    let cgroup_id = enclosed(config)?;
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    let child_pid = read_u32(child, config.task_pid)?;
    let child_tgid = read_u32(child, config.task_tgid)?;
    // A new thread joins its creator's thread group: not a process.
    if child_pid != child_tgid {
        return Ok(());
    }
    let ev = head(
        process::FORK,
        child_tgid,
        read_u32(parent, config.task_tgid)?,
        cgroup_id,
    );
    output(&ev);
    Ok(())
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), i32> {
    let config = config()?;
    let cgroup_id = enclosed(config)?;
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    let pid = read_u32(task, config.task_tgid)?;
    let parent = read_ptr(task, config.task_real_parent)?;
    let ppid = read_u32(parent, config.task_tgid)?;
    let Some(mut entry) = PROCESSES.reserve::<ExecEvent>(0) else {
        lost();
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at the reserved ring buffer record, ours until submitted; every
    // field is written below before submit, or the record is discarded.
    unsafe {
        (*ev).head = head(process::EXEC, pid, ppid, cgroup_id);
        (*ev).path[0] = 0;
        if let Ok(filename) = read_ptr(bprm, config.bprm_filename) {
            let _ = bpf_probe_read_kernel_str_bytes(filename, &mut (*ev).path);
        }
        let (len, read) = read_argv(task, config, &mut (*ev).argv);
        (*ev).head.argv_len = len;
        (*ev).head.argv_read = read;
    }
    entry.submit(0);
    Ok(())
}

/// Copies the new program's arguments (`mm->arg_start .. mm->arg_end`, in the process's own
/// memory) into `argv`: returns their whole length and how many bytes were read.
fn read_argv(task: *const u8, config: &ProcessConfig, argv: &mut [u8; ARGV_MAX]) -> (u32, u32) {
    let Ok(mm) = read_ptr(task, config.task_mm) else {
        return (0, 0);
    };
    let (Ok(start), Ok(end)) = (
        read_u64(mm, config.mm_arg_start),
        read_u64(mm, config.mm_arg_end),
    ) else {
        return (0, 0);
    };
    if end <= start {
        return (0, 0);
    }
    let len = end - start;
    let mut want = len;
    if want > ARGV_MAX as u64 {
        want = ARGV_MAX as u64;
    }
    // SAFETY: the helper copies at most `want` (≤ ARGV_MAX) bytes into `argv`, which holds
    // ARGV_MAX; the source is a user address it checks itself.
    let ret = unsafe {
        bpf_probe_read_user(
            argv.as_mut_ptr().cast(),
            want as u32,
            start as *const core::ffi::c_void,
        )
    };
    if ret != 0 {
        return (len as u32, 0);
    }
    (len as u32, want as u32)
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), i32> {
    let config = config()?;
    let cgroup_id = enclosed(config)?;
    let task: *const u8 = ctx.arg(0);
    let pid = read_u32(task, config.task_pid)?;
    let tgid = read_u32(task, config.task_tgid)?;
    // Only the thread group leader's end is the process's end.
    if pid != tgid {
        return Ok(());
    }
    let mut ev = head(process::EXIT, tgid, 0, cgroup_id);
    ev.exit_code = read_u32(task, config.task_exit_code)?;
    output(&ev);
    Ok(())
}

fn config() -> Result<&'static ProcessConfig, i32> {
    match PROCESS_CONFIG.get(CONFIG_INDEX) {
        Some(config) if config.enclosure_cgroup != 0 => Ok(config),
        _ => Err(0),
    }
}

/// The current task's cgroup id, when that cgroup lies under the enclosure.
fn enclosed(config: &ProcessConfig) -> Result<u64, i32> {
    // SAFETY: these helpers only read the current task's cgroup.
    let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(config.enclosure_level as i32) };
    if ancestor != config.enclosure_cgroup {
        return Err(0);
    }
    // SAFETY: as above.
    Ok(unsafe { bpf_get_current_cgroup_id() })
}

fn head(kind: u32, pid: u32, ppid: u32, cgroup_id: u64) -> ProcessEvent {
    ProcessEvent {
        kind,
        pid,
        ppid,
        uid: bpf_get_current_uid_gid() as u32,
        exit_code: 0,
        argv_len: 0,
        argv_read: 0,
        reserved: 0,
        cgroup_id,
        // SAFETY: reads the monotonic clock.
        time_ns: unsafe { bpf_ktime_get_ns() },
    }
}

fn output(ev: &ProcessEvent) {
    if PROCESSES.output::<ProcessEvent>(ev, 0).is_err() {
        lost();
    }
}

fn lost() {
    if let Some(count) = PROCESSES_LOST.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *count += 1 };
    }
}

fn read_u32(base: *const u8, offset: u32) -> Result<u32, i32> {
    // SAFETY: the helper checks the kernel address itself and fails instead of faulting.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<u32>()) }
}

fn read_u64(base: *const u8, offset: u32) -> Result<u64, i32> {
    // SAFETY: as in read_u32.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<u64>()) }
}

fn read_ptr(base: *const u8, offset: u32) -> Result<*const u8, i32> {
    let ptr = read_u64(base, offset)? as *const u8;
    if ptr.is_null() {
        return Err(0);
    }
    Ok(ptr)
}
