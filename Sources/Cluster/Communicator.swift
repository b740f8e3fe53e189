#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The ranks of a data-parallel job and the collective operations the trainers need. One process without MPI is
/// the single-rank `LocalCommunicator`; `mpirun`/`srun` jobs get an Open MPI communicator loaded at run time
/// (`Cluster.world`). Every rank must call the collective operations in the same order with matching sizes.
public protocol Communicator: AnyObject, Sendable {
    /// This process's rank, 0..<size.
    var rank: Int { get }
    /// Number of ranks.
    var size: Int { get }
    /// What carries the messages, for logs ("single process", "Open MPI v4.1.4").
    var backend: String { get }

    func barrier()
    /// Copies `root`'s buffer into every rank's (all buffers must have the same count).
    func broadcast(_ buffer: UnsafeMutableBufferPointer<Double>, root: Int)
    /// Copies `root`'s bytes to every rank; the other ranks' arrays are replaced (any length).
    func broadcastBytes(_ bytes: inout [UInt8], root: Int)
    /// Elementwise sum over ranks in place (MPI_Allreduce): the order of the additions is the library's, so
    /// the bits may differ between rank counts. `orderedSum` is the reproducible alternative.
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>)
    /// Elementwise maximum over ranks in place.
    func allreduceMax(_ buffer: UnsafeMutableBufferPointer<Double>)
    /// Every rank's bytes (any lengths), in rank order, on every rank.
    func allgatherBytes(_ bytes: [UInt8]) -> [[UInt8]]
    /// Point-to-point, blocking; messages between two ranks arrive in the order they were sent.
    func send(_ buffer: UnsafeBufferPointer<Double>, to destination: Int)
    func receive(_ buffer: UnsafeMutableBufferPointer<Double>, from source: Int)
    /// Ends every rank of the job with `code` (MPI_Abort); never returns.
    func abort(code: Int32) -> Never
}

/// The single rank of a process that runs alone. Collectives are identities.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var backend: String { "single process" }
    public func barrier() {}
    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Double>, root: Int) { precondition(root == 0) }
    public func broadcastBytes(_ bytes: inout [UInt8], root: Int) { precondition(root == 0) }
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) {}
    public func allreduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) {}
    public func allgatherBytes(_ bytes: [UInt8]) -> [[UInt8]] { [bytes] }
    public func send(_ buffer: UnsafeBufferPointer<Double>, to destination: Int) {
        preconditionFailure("a single-process communicator has no other rank to send to")
    }
    public func receive(_ buffer: UnsafeMutableBufferPointer<Double>, from source: Int) {
        preconditionFailure("a single-process communicator has no other rank to receive from")
    }
    public func abort(code: Int32) -> Never { exit(code) }
}
