import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why the MPI communicator could not be set up; the CLI prints it and exits with code 2.
public enum ClusterError: Error, CustomStringConvertible, Equatable {
    case badSetting(name: String, value: String, expected: String)
    case cannotLoad(library: String, reason: String)
    case notOpenMPI(library: String, missing: String)
    case initFailed(library: String, code: Int32)
    case sizeMismatch(launcher: String, tasks: Int, mpiSize: Int)
    case launched(launcher: String, detail: String, underlying: String)

    public var description: String {
        switch self {
        case let .badSetting(name, value, expected):
            return "\(name)=\(value): expected \(expected)"
        case let .cannotLoad(library, reason):
            return "cannot load Open MPI (\(library)): \(reason). Install it (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) or point RELAXFT_MPI_LIBRARY at your Open MPI's libmpi.so"
        case let .notOpenMPI(library, missing):
            return "\(library) is not Open MPI (symbol \(missing) missing); relaxft speaks Open MPI's ABI (4.x, 5.x): set RELAXFT_MPI_LIBRARY to an Open MPI libmpi.so"
        case let .initFailed(library, code):
            return "MPI_Init_thread of \(library) failed with error \(code)"
        case let .sizeMismatch(launcher, tasks, mpiSize):
            return "\(launcher) started \(tasks) tasks but MPI sees a world of \(mpiSize): each task would train alone. Under Slurm use an MPI plugin (srun --mpi=pmix; see srun --mpi=list), or start the job with mpirun"
        case let .launched(launcher, detail, underlying):
            return "started by \(launcher) (\(detail)), but MPI is not usable: \(underlying)"
        }
    }
}

/// How the process was started, from its environment: which launcher, how many tasks it started, and whether
/// relaxft must join an MPI job. RELAXFT_MPI=auto (default) joins when a launcher started more than one task;
/// `on` always (one task included; an error when MPI cannot be loaded); `off` never (every task then runs alone).
public struct LaunchEnvironment: Equatable, Sendable {
    public enum Mode: String, Sendable { case auto, on, off }
    public var mode: Mode
    /// "mpirun", "srun", "a PMIx launcher", "a PMI launcher"; nil when started from a shell.
    public var launcher: String?
    /// The environment variable that gave the task count, with its value ("OMPI_COMM_WORLD_SIZE=2").
    public var detail: String?
    /// Tasks the launcher started, when it says.
    public var tasks: Int?
    /// This task's rank as the launcher numbers it, when it says (before MPI is loaded).
    public var launchRank: Int?
    /// The libmpi to load: RELAXFT_MPI_LIBRARY, else Open MPI's soname.
    public var library: String

    public static let defaultLibrary = "libmpi.so.40"

    public static func detect(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> LaunchEnvironment {
        let raw = env["RELAXFT_MPI"] ?? "auto"
        guard let mode = Mode(rawValue: raw.lowercased()) else {
            throw ClusterError.badSetting(name: "RELAXFT_MPI", value: raw, expected: "auto, on or off")
        }
        var launcher: String?, detail: String?, tasks: Int?
        // Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE; MPICH-style PMI launchers (and srun --mpi=pmi2) PMI_SIZE;
        // srun sets SLURM_STEP_NUM_TASKS for its job step (a batch script itself has no step variables).
        for (name, who) in [("OMPI_COMM_WORLD_SIZE", "mpirun"), ("PMI_SIZE", "a PMI launcher"), ("SLURM_STEP_NUM_TASKS", "srun")] {
            guard let v = env[name] else { continue }
            guard let n = Int(v), n >= 1 else { throw ClusterError.badSetting(name: name, value: v, expected: "a positive task count") }
            launcher = who
            detail = "\(name)=\(v)"
            tasks = n
            break
        }
        if launcher == nil, let v = env["PMIX_RANK"] {
            launcher = "a PMIx launcher"
            detail = "PMIX_RANK=\(v)"
        }
        let library = env["RELAXFT_MPI_LIBRARY"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultLibrary
        let rankVariables = ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"] + (env["SLURM_STEP_NUM_TASKS"] != nil ? ["SLURM_PROCID"] : [])
        let launchRank = rankVariables.lazy.compactMap { env[$0].flatMap(Int.init) }.first
        return LaunchEnvironment(mode: mode, launcher: launcher, detail: detail, tasks: tasks, launchRank: launchRank, library: library)
    }

    /// Whether a launcher started this process as one of several tasks (or of an unknown number).
    public var isMultiTaskLaunch: Bool { launcher != nil && (tasks ?? 2) > 1 }

    /// Whether this process must load MPI and join the job.
    public var wantsMPI: Bool {
        switch mode {
        case .off: return false
        case .on: return true
        case .auto: return isMultiTaskLaunch
        }
    }
}

/// The process's communicator, set up on first use: Open MPI when the process is one of several tasks of a
/// launcher (or RELAXFT_MPI=on), otherwise a single rank that never touches MPI.
public enum Cluster {
    private final class State: @unchecked Sendable {
        let lock = NSLock()
        var world: (any Communicator)?
        var finished = false
    }
    private static let state = State()

    /// The communicator of every rank of this job; throws (a `ClusterError`) when the launcher asked for MPI and it
    /// cannot be used.
    public static func world() throws -> any Communicator {
        state.lock.lock(); defer { state.lock.unlock() }
        if let w = state.world { return w }
        let env = try LaunchEnvironment.detect()
        let w: any Communicator
        if env.wantsMPI {
            let mpi: OpenMPICommunicator
            do {
                mpi = try OpenMPICommunicator(library: env.library)
            } catch let e as ClusterError {
                if let l = env.launcher { throw ClusterError.launched(launcher: l, detail: env.detail ?? "", underlying: e.description) }
                throw e
            }
            if let n = env.tasks, n != mpi.size, let l = env.launcher {
                mpi.finalize()
                throw ClusterError.sizeMismatch(launcher: l, tasks: n, mpiSize: mpi.size)
            }
            // A rank that leaves without `finish` (an uncaught error path, exit() anywhere) must not leave the other
            // ranks waiting in a collective: end the whole job.
            atexit {
                Cluster.state.lock.lock()
                let clean = Cluster.state.finished, w = Cluster.state.world
                Cluster.state.lock.unlock()
                if !clean, let w, w.size > 1 {
                    FileHandle.standardError.write(Data("relaxft (rank \(w.rank) of \(w.size)): exited without finishing; ending the job\n".utf8))
                    w.abort(code: 2)
                }
            }
            w = mpi
        } else {
            w = LocalCommunicator()
        }
        state.world = w
        return w
    }

    /// The communicator if one has been set up (nil before the first `world()`).
    public static var current: (any Communicator)? {
        state.lock.lock(); defer { state.lock.unlock() }
        return state.world
    }

    /// Ends the process with `code`. Success: every rank finalises MPI (collective) and exits. Failure on a rank
    /// of a multi-rank job: `message` is printed with the rank and the whole job ends (MPI_Abort), so no rank waits
    /// for one that is gone.
    public static func exit(_ code: Int32, message: String? = nil) -> Never {
        state.lock.lock()
        let w = state.world
        state.finished = true
        state.lock.unlock()
        if let message {
            let prefix = w.map { $0.size > 1 ? "[rank \($0.rank) of \($0.size)] " : "" } ?? ""
            FileHandle.standardError.write(Data((prefix + message + "\n").utf8))
        }
        if let mpi = w as? OpenMPICommunicator {
            if code != 0 && mpi.size > 1 { mpi.abort(code: code) }
            mpi.finalize()
        }
        endProcess(code)
    }
}

/// The C library's exit (inside `Cluster` the name means `Cluster.exit`).
private func endProcess(_ code: Int32) -> Never { exit(code) }
