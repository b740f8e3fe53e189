import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Open MPI loaded at run time with dlopen: relaxft has no build-time dependency on MPI, and a process that is
/// not started by mpirun/srun never loads it. Open MPI's C ABI (stable across its 4.x and 5.x series, libmpi.so.40)
/// makes the predefined handles addresses of exported objects: MPI_COMM_WORLD is `&ompi_mpi_comm_world`,
/// MPI_DOUBLE `&ompi_mpi_double`, MPI_SUM `&ompi_mpi_op_sum`; MPI_IN_PLACE is (void *)1 and MPI_STATUS_IGNORE
/// NULL (Open MPI's mpi.h). MPICH-family libraries (integer handles) are refused with an error.
final class OpenMPICommunicator: Communicator, @unchecked Sendable {
    typealias Handle = UnsafeMutableRawPointer
    private typealias InitThread = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutableRawPointer?, Int32, UnsafeMutablePointer<Int32>?) -> Int32
    private typealias CommInt = @convention(c) (Handle, UnsafeMutablePointer<Int32>?) -> Int32
    private typealias CommOnly = @convention(c) (Handle) -> Int32
    private typealias Send = @convention(c) (UnsafeRawPointer?, Int32, Handle, Int32, Int32, Handle) -> Int32
    private typealias Recv = @convention(c) (UnsafeMutableRawPointer?, Int32, Handle, Int32, Int32, Handle, UnsafeMutableRawPointer?) -> Int32
    private typealias Bcast = @convention(c) (UnsafeMutableRawPointer?, Int32, Handle, Int32, Handle) -> Int32
    private typealias Allreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle, Handle) -> Int32
    private typealias Allgather = @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32, Handle, Handle) -> Int32
    private typealias Allgatherv = @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, UnsafePointer<Int32>?, UnsafePointer<Int32>?, Handle, Handle) -> Int32
    private typealias Abort = @convention(c) (Handle, Int32) -> Int32
    private typealias NoArgs = @convention(c) () -> Int32
    private typealias IntOut = @convention(c) (UnsafeMutablePointer<Int32>?) -> Int32
    private typealias Version = @convention(c) (UnsafeMutablePointer<CChar>?, UnsafeMutablePointer<Int32>?) -> Int32

    let rank: Int
    let size: Int
    let backend: String
    let library: String

    private let world, double, byte, int32, opSum, opMax: Handle
    private let mpiSend: Send, mpiRecv: Recv, mpiBcast: Bcast, mpiAllreduce: Allreduce
    private let mpiAllgather: Allgather, mpiAllgatherv: Allgatherv, mpiBarrier: CommOnly, mpiAbort: Abort
    private let mpiFinalize: NoArgs, mpiFinalized: IntOut
    private let lock = NSLock()
    /// MPI counts are C ints: longer buffers go in pieces of this many elements.
    private let maxCount = 1 << 30
    private let tag: Int32 = 2801

    /// Opens `library` (RTLD_GLOBAL: Open MPI's plugins resolve symbols of libmpi), initialises MPI
    /// (MPI_THREAD_SERIALIZED: worker threads compute, one thread at a time talks) and reads rank and size.
    init(library: String) throws {
        guard let lib = dlopen(library, RTLD_NOW | RTLD_GLOBAL) else {
            throw ClusterError.cannotLoad(library: library, reason: dlerror().map { String(cString: $0) } ?? "unknown dlopen error")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let p = dlsym(lib, name) else { throw ClusterError.notOpenMPI(library: library, missing: name) }
            return p
        }
        func function<F>(_ name: String, _: F.Type) throws -> F { unsafeBitCast(try symbol(name), to: F.self) }
        world = try symbol("ompi_mpi_comm_world")
        double = try symbol("ompi_mpi_double")
        byte = try symbol("ompi_mpi_byte")
        int32 = try symbol("ompi_mpi_int")
        opSum = try symbol("ompi_mpi_op_sum")
        opMax = try symbol("ompi_mpi_op_max")
        mpiSend = try function("MPI_Send", Send.self)
        mpiRecv = try function("MPI_Recv", Recv.self)
        mpiBcast = try function("MPI_Bcast", Bcast.self)
        mpiAllreduce = try function("MPI_Allreduce", Allreduce.self)
        mpiAllgather = try function("MPI_Allgather", Allgather.self)
        mpiAllgatherv = try function("MPI_Allgatherv", Allgatherv.self)
        mpiBarrier = try function("MPI_Barrier", CommOnly.self)
        mpiAbort = try function("MPI_Abort", Abort.self)
        mpiFinalize = try function("MPI_Finalize", NoArgs.self)
        mpiFinalized = try function("MPI_Finalized", IntOut.self)
        let initThread = try function("MPI_Init_thread", InitThread.self)
        let commRank = try function("MPI_Comm_rank", CommInt.self)
        let commSize = try function("MPI_Comm_size", CommInt.self)
        let version = try function("MPI_Get_library_version", Version.self)
        var provided: Int32 = 0
        let rc = initThread(nil, nil, 2, &provided)
        guard rc == 0 else { throw ClusterError.initFailed(library: library, code: rc) }
        var r: Int32 = 0, s: Int32 = 0
        _ = commRank(world, &r)
        _ = commSize(world, &s)
        rank = Int(r)
        size = Int(s)
        // MPI_MAX_LIBRARY_VERSION_STRING is 256 in Open MPI.
        var text = [CChar](repeating: 0, count: 512), length: Int32 = 0
        _ = version(&text, &length)
        let full = String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        backend = full.split(separator: ",").first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? "MPI"
        self.library = library
    }

    private func check(_ rc: Int32, _ what: String) {
        // The default error handler (MPI_ERRORS_ARE_FATAL) ends the job before a failing call returns; this is
        // for a library configured otherwise.
        if rc != 0 {
            FileHandle.standardError.write(Data("relaxft (rank \(rank) of \(size)): \(what) failed with MPI error \(rc)\n".utf8))
            abort(code: 2)
        }
    }

    /// Runs `body` on pieces of at most `maxCount` elements.
    private func pieces(_ count: Int, _ body: (Int, Int32) -> Void) {
        var start = 0
        repeat {
            let n = Swift.min(maxCount, count - start)
            body(start, Int32(n))
            start += n
        } while start < count
    }

    func barrier() {
        lock.lock(); defer { lock.unlock() }
        check(mpiBarrier(world), "MPI_Barrier")
    }

    func broadcast(_ buffer: UnsafeMutableBufferPointer<Double>, root: Int) {
        lock.lock(); defer { lock.unlock() }
        pieces(buffer.count) { start, n in
            check(mpiBcast(buffer.baseAddress.map { $0 + start }, n, double, Int32(root), world), "MPI_Bcast")
        }
    }

    func broadcastBytes(_ bytes: inout [UInt8], root: Int) {
        var length = [Double(bytes.count)]
        length.withUnsafeMutableBufferPointer { broadcast($0, root: root) }
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(length[0])) }
        lock.lock(); defer { lock.unlock() }
        bytes.withUnsafeMutableBytes { raw in
            pieces(raw.count) { start, n in
                check(mpiBcast(raw.baseAddress.map { $0 + start }, n, byte, Int32(root), world), "MPI_Bcast")
            }
        }
    }

    private func allreduce(_ buffer: UnsafeMutableBufferPointer<Double>, _ op: Handle) {
        lock.lock(); defer { lock.unlock() }
        let inPlace = UnsafeRawPointer(bitPattern: 1)
        pieces(buffer.count) { start, n in
            check(mpiAllreduce(inPlace, buffer.baseAddress.map { $0 + start }, n, double, op, world), "MPI_Allreduce")
        }
    }

    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) { allreduce(buffer, opSum) }
    func allreduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) { allreduce(buffer, opMax) }

    func allgatherBytes(_ bytes: [UInt8]) -> [[UInt8]] {
        lock.lock(); defer { lock.unlock() }
        var mine = Int32(clamping: bytes.count)
        precondition(bytes.count < Int(Int32.max), "allgatherBytes: \(bytes.count) bytes exceed an MPI count")
        var counts = [Int32](repeating: 0, count: size)
        check(mpiAllgather(&mine, 1, int32, &counts, 1, int32, world), "MPI_Allgather")
        var displacements = [Int32](repeating: 0, count: size)
        var total = 0
        for r in 0..<size {
            precondition(total + Int(counts[r]) < Int(Int32.max), "allgatherBytes: the gathered bytes exceed an MPI count")
            displacements[r] = Int32(total)
            total += Int(counts[r])
        }
        var all = [UInt8](repeating: 0, count: Swift.max(total, 1))
        bytes.withUnsafeBytes { send in
            all.withUnsafeMutableBytes { recv in
                check(mpiAllgatherv(send.baseAddress, mine, byte, recv.baseAddress, counts, displacements, byte, world), "MPI_Allgatherv")
            }
        }
        return (0..<size).map { r in Array(all[Int(displacements[r])..<(Int(displacements[r]) + Int(counts[r]))]) }
    }

    func send(_ buffer: UnsafeBufferPointer<Double>, to destination: Int) {
        lock.lock(); defer { lock.unlock() }
        pieces(buffer.count) { start, n in
            check(mpiSend(buffer.baseAddress.map { UnsafeRawPointer($0 + start) }, n, double, Int32(destination), tag, world), "MPI_Send")
        }
    }

    func receive(_ buffer: UnsafeMutableBufferPointer<Double>, from source: Int) {
        lock.lock(); defer { lock.unlock() }
        pieces(buffer.count) { start, n in
            check(mpiRecv(buffer.baseAddress.map { $0 + start }, n, double, Int32(source), tag, world, nil), "MPI_Recv")
        }
    }

    func abort(code: Int32) -> Never {
        _ = mpiAbort(world, code)
        exit(code)
    }

    /// MPI_Finalize (collective: every rank must reach it); harmless when already finalised.
    func finalize() {
        lock.lock(); defer { lock.unlock() }
        var done: Int32 = 0
        _ = mpiFinalized(&done)
        if done == 0 { _ = mpiFinalize() }
    }
}
