import Foundation
import Testing
@testable import Cluster
import TestSupport

/// Items whose sum depends on the order of the additions (signs, exponents 2^±30).
func orderSensitiveItems(_ n: Int, length: Int, seed: UInt64 = 7) -> [[Double]] {
    var s = seed
    return (0..<n).map { _ in
        (0..<length).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return (s & 1 == 0 ? 1 : -1) * Double(s >> 11) / Double(1 << 53) * pow(2, Double(Int((s >> 3) % 61) - 30))
        }
    }
}

/// Number of positions where two vectors differ in any bit (a short failure message for long vectors).
func differingBits(_ a: [Double], _ b: [Double]) -> Int {
    a.count != b.count ? max(a.count, b.count) : zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
}

func sequentialSum(_ items: [[Double]], length: Int) -> [Double] {
    var acc = [Double](repeating: 0, count: length)
    for x in items { for j in 0..<length { acc[j] = acc[j] + x[j] } }
    return acc
}

@Suite("cluster")
struct ClusterTests {
    @Test func shardsAreContiguousBalancedAndCoverEveryItem() {
        for parts in 1...5 {
            for count in 0...13 {
                let r = shardRanges(count: count, parts: parts)
                #expect(r.count == parts)
                #expect(r.first!.lowerBound == 0 && r.last!.upperBound == count)
                for k in 1..<parts { #expect(r[k].lowerBound == r[k - 1].upperBound) }
                let sizes = r.map(\.count)
                #expect(sizes.max()! - sizes.min()! <= 1)
                #expect(sizes == sizes.sorted(by: >), "larger shares first, so ranks with items are a prefix")
            }
        }
        #expect(shardRanges(count: 7, parts: 3) == [0..<3, 3..<5, 5..<7])
        #expect(shardRanges(count: 2, parts: 3) == [0..<1, 1..<2, 2..<2])
    }

    @Test func theItemsReallyAreOrderSensitive() {
        // Otherwise the bit-identity checks below could not fail.
        let items = orderSensitiveItems(7, length: 2000)
        let forward = sequentialSum(items, length: 2000), backward = sequentialSum(items.reversed(), length: 2000)
        #expect(forward.map(\.bitPattern) != backward.map(\.bitPattern))
    }

    @Test func singleRankSumsLeftToRight() {
        let items = orderSensitiveItems(5, length: 1001)
        let w = LocalCommunicator()
        #expect(w.shard(of: 5) == 0..<5)
        let expected = sequentialSum(items, length: 1001)
        #expect(differingBits(w.orderedSum(items, count: 5, length: 1001, segment: 100), expected) == 0)
        #expect(differingBits(w.orderedSumByGather(items, count: 5, length: 1001), expected) == 0)
        #expect(differingBits(w.unorderedSum(items, length: 1001), expected) == 0)
        #expect(w.orderedSum([], count: 0, length: 3) == [0, 0, 0])
    }

    @Test(arguments: [2, 3, 4])
    func orderedSumIsBitIdenticalForAnyRankCount(ranks: Int) {
        let length = 1003
        for count in [0, 1, 2, 3, 4, 5, 8] {
            let items = orderSensitiveItems(count, length: length, seed: UInt64(count))
            let expected = sequentialSum(items, length: length)
            for segment in [nil, 1 << 16, 100, 7] as [Int?] {
                let sums = ThreadHub(size: ranks).run { w in
                    w.orderedSum(Array(items[w.shard(of: count)]), count: count, length: length, segment: segment)
                }
                for (r, s) in sums.enumerated() { #expect(differingBits(s, expected) == 0, "rank \(r) of \(ranks), \(count) items, segment \(segment)") }
            }
            let gathered = ThreadHub(size: ranks).run { w in w.orderedSumByGather(Array(items[w.shard(of: count)]), count: count, length: length) }
            #expect(gathered.allSatisfy { differingBits($0, expected) == 0 })
        }
    }

    @Test func pipelineSegmentsFollowTheCostModel() {
        #expect(pipelineSegment(length: 412_525, ranks: 1) == 412_525)
        #expect(pipelineSegment(length: 412_525, ranks: 2) == 14_361)        // √(412525 · 500)
        #expect(pipelineSegment(length: 412_525, ranks: 64) == 1_809)        // √(412525 · 500 / 63)
        #expect(pipelineSegment(length: 10, ranks: 2) == 1_024)
        #expect(pipelineSegment(length: 100_000_000, ranks: 2) == 65_536)
    }

    @Test func unorderedSumDiffersInTheLastBits() {
        // The contrast that motivates orderedSum: adding rank partials changes the association.
        let items = orderSensitiveItems(6, length: 2000)
        let expected = sequentialSum(items, length: 2000)
        let sums = ThreadHub(size: 3).run { w in w.unorderedSum(Array(items[w.shard(of: 6)]), length: 2000) }
        #expect(differingBits(sums[0], expected) > 0)
        for j in 0..<2000 where expected[j] != 0 { #expect(abs(sums[0][j] - expected[j]) <= 1e-12 * items.map { abs($0[j]) }.reduce(0, +)) }
    }

    @Test func resultsAreGatheredInInputOrderWithEveryBit() throws {
        struct R: Codable, Equatable, Sendable { var i: Int; var x: Double; var label: String? }
        let values: [Double] = [0.1 + 0.2, -0.0, .infinity, -.infinity, .leastNonzeroMagnitude, 1.0.nextUp, .pi]
        let all = (0..<10).map { R(i: $0, x: values[$0 % values.count], label: $0 % 2 == 0 ? "s\($0)" : nil) }
        let out = ThreadHub(size: 3).run { w in
            (try? w.gatherInOrder(Array(all[w.shard(of: all.count)])))?.map { [Double($0.i), Double(bitPattern: $0.x.bitPattern)] }
        }
        for o in out {
            #expect(o?.map { $0[0] } == all.map { Double($0.i) })
            #expect(o?.map { $0[1].bitPattern } == all.map(\.x.bitPattern))
        }
        let concatenated = ThreadHub(size: 4).run { w in w.allgatherConcatenated(w.shard(of: 6).map(Double.init)) }
        #expect(concatenated.allSatisfy { $0 == [0, 1, 2, 3, 4, 5] })
        let b = ThreadHub(size: 3).run { w in (try? w.broadcast(w.rank == 2 ? all : [], root: 2)) ?? [] }
        #expect(b.allSatisfy { $0 == all })
    }

    @Test func launchEnvironmentDecidesWhetherToJoinMPI() throws {
        func env(_ e: [String: String]) throws -> LaunchEnvironment { try LaunchEnvironment.detect(e) }
        #expect(try !env([:]).wantsMPI)
        #expect(try env([:]).library == "libmpi.so.40")
        // mpirun: Open MPI's variables.
        let mpirun = try env(["OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "PMIX_RANK": "1"])
        #expect(mpirun.wantsMPI && mpirun.tasks == 2 && mpirun.launcher == "mpirun")
        #expect(try !env(["OMPI_COMM_WORLD_SIZE": "1", "PMIX_RANK": "0"]).wantsMPI)
        #expect(try env(["OMPI_COMM_WORLD_SIZE": "1", "RELAXFT_MPI": "on"]).wantsMPI)
        // srun sets step variables; a batch script running relaxft directly has only job variables.
        let srun = try env(["SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4"])
        #expect(srun.wantsMPI && srun.tasks == 4 && srun.launcher == "srun")
        #expect(try !env(["SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_JOB_ID": "12"]).wantsMPI)
        #expect(try !env(["SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_ID": "0"]).wantsMPI)
        // A PMIx launcher that gives no size: join.
        #expect(try env(["PMIX_RANK": "0"]).wantsMPI)
        #expect(try env(["PMI_SIZE": "3", "PMI_RANK": "0"]).tasks == 3)
        #expect(try !env(["OMPI_COMM_WORLD_SIZE": "4", "RELAXFT_MPI": "off"]).wantsMPI)
        #expect(try env(["RELAXFT_MPI_LIBRARY": "/opt/openmpi/lib/libmpi.so"]).library == "/opt/openmpi/lib/libmpi.so")
        #expect(throws: ClusterError.badSetting(name: "RELAXFT_MPI", value: "yes", expected: "auto, on or off")) { try env(["RELAXFT_MPI": "yes"]) }
        #expect(throws: ClusterError.self) { try env(["OMPI_COMM_WORLD_SIZE": "two"]) }
    }

    @Test func loadingSomethingElseThanOpenMPIIsAnError() {
        // OpenBLAS is always present (Tape needs it) and exports none of Open MPI's symbols.
        #expect(throws: ClusterError.notOpenMPI(library: "libopenblas.so.0", missing: "ompi_mpi_comm_world")) {
            _ = try OpenMPICommunicator(library: "libopenblas.so.0")
        }
        do {
            _ = try OpenMPICommunicator(library: "/nonexistent/libmpi.so.40")
            Issue.record("loading a missing library succeeded")
        } catch let e as ClusterError {
            #expect(e.description.contains("/nonexistent/libmpi.so.40") && e.description.contains("RELAXFT_MPI_LIBRARY"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
