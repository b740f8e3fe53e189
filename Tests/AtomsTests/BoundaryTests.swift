import Foundation
import Testing
import Tape
@testable import Atoms
#if canImport(Glibc)
import Glibc
#endif

@Suite("Library boundaries: numbers, memory, messages, outputs")
struct BoundaryTests {
    @Test func sizesParse() {
        let gib: Double = 1024 * 1024 * 1024
        #expect(MemoryBudget.parseSize("12G") == 12 * gib)
        #expect(MemoryBudget.parseSize("512m") == gib / 2)
        #expect(MemoryBudget.parseSize("1e9") == 1e9)
        for bad in ["", "-1G", "nan", "12GB", "x", "0"] { #expect(MemoryBudget.parseSize(bad) == nil, "\(bad)") }
        #expect(MemoryBudget.limit.bytes > 0)
        #expect(throws: ResourceError.self) { try MemoryBudget.require(.infinity, for: "x") }
        #expect(throws: ResourceError.self) { try MemoryBudget.require(.nan, for: "x") }
        #expect(throws: ResourceError.self) { try MemoryBudget.require(1e30, for: "x") }
        do { try MemoryBudget.require(1e30, for: "the thing") } catch let e as ResourceError {
            #expect(e.message.hasPrefix("the thing would need about 1e+15 PB, more than the "), "\(e)")
        } catch { Issue.record("\(error)") }
        try? MemoryBudget.require(1000, for: "small")
    }

    @Test func productsDoNotTrap() {
        #expect(checkedProduct([3, 4, 5]) == 60)
        #expect(checkedProduct([Int]()) == 1)
        #expect(checkedProduct([1 << 62, 4]) == nil)
        #expect(checkedProduct([-1, 4]) == nil)
        #expect(checkedProduct([0, Int.max]) == 0)
    }

    @Test func controlCharactersAreEscaped() {
        #expect("plain".escapingControlCharacters() == "plain")
        #expect("a\u{1B}[31mb".escapingControlCharacters() == "a\\u{1B}[31mb")
        #expect("x\ry\0z\u{7F}".escapingControlCharacters() == "x\\ry\\u{0}z\\u{7F}")
        #expect("l1\nl2\tx".escapingControlCharacters() == "l1\\nl2\\tx")
        #expect("l1\nl2\tx".escapingControlCharacters(keepNewlines: true) == "l1\nl2\tx")
        #expect("\u{202E}evil".escapingControlCharacters() == "\\u{202E}evil")
        #expect("Å σ é".escapingControlCharacters() == "Å σ é")
        // Messages about files quote their content escaped.
        let e = StructureFileError(path: "a\u{1B}b.xyz", line: 3, kind: .unknownElement, expected: "a symbol", found: quoted("\u{1B}[2JSi"))
        #expect(!e.description.unicodeScalars.contains { $0.value < 0x20 }, "\(e.description)")
    }

    /// Inputs the neighbour list cannot take are named before building; building never traps on them anyway.
    @Test func neighbourListProblems() {
        let s = Structure.diamond(a: 5.431, repeats: 1)
        #expect(NeighborList.problem(positions: s.positions, cell: s.cell, pbc: s.pbc, cutoff: 5) == nil)
        for bad in [Double.nan, .infinity, 1e20, -1e300, 1.1e8] {
            var x = s.positions
            x[3, 1] = bad
            let p = NeighborList.problem(positions: x, cell: s.cell, pbc: s.pbc, cutoff: 5)
            #expect(p?.contains("atom 4") == true, "\(bad): \(p ?? "nil")")
            // Clamped conversions: a list, not a trap (callers check first; this is the backstop).
            _ = NeighborList.build(positions: x, cell: s.cell, pbc: s.pbc, cutoff: 5)
            _ = NeighborList.build(positions: x, cell: s.cell, pbc: [false, false, false], cutoff: 5)
        }
        for cutoff in [0.0, -1, .nan, .infinity] {
            #expect(NeighborList.problem(positions: s.positions, cell: s.cell, pbc: s.pbc, cutoff: cutoff)?.contains("cutoff") == true)
        }
        var cell = s.cell
        cell[1, 1] = .nan
        #expect(NeighborList.problem(positions: s.positions, cell: cell, pbc: s.pbc, cutoff: 5)?.contains("cell") == true)
        #expect(NeighborList.problem(positions: s.positions, cell: .zeros([3, 3]), pbc: s.pbc, cutoff: 5)?.contains("non-singular") == true)
    }

    /// The pair estimate that gates memory is within a factor of about two of the truth for ordinary structures
    /// (periodic bulk, a slab, a molecule, a cell thinner than the cutoff), and huge for absurd requests.
    @Test(arguments: [(1, 5.0, [true, true, true]), (3, 5.0, [true, true, true]), (2, 3.0, [true, true, false]), (2, 4.0, [false, false, false]),
                      (1, 9.0, [true, true, true])])
    func pairEstimate(repeats: Int, cutoff: Double, pbc: [Bool]) {
        var s = Structure.diamond(a: 5.431, repeats: repeats)
        s.pbc = pbc
        let actual = Double(NeighborList.build(s, cutoff: cutoff).pairCount)
        let estimate = NeighborList.estimatedPairs(positions: s.positions, cell: s.cell, pbc: s.pbc, cutoff: cutoff)
        #expect(estimate > actual / 2.5 && estimate < actual * 2.5, "estimate \(estimate), actual \(actual)")
    }

    @Test func absurdListsAreRefused() throws {
        let s = Structure.diamond(a: 5.431, repeats: 1)
        try NeighborList.validate(s, cutoff: 6, name: "si")
        for cutoff in [1e6, 1e4] {
            #expect(throws: NeighborListError.self) { try NeighborList.validate(s, cutoff: cutoff, name: "si") }
        }
        do { try NeighborList.validate(s, cutoff: 1e6, name: "si.xyz") } catch let e as NeighborListError {
            #expect(e.message.hasPrefix("si.xyz: the neighbour list within 1000000.0 Å"), "\(e)")
        }
    }

    // MARK: Outputs

    func scratch() throws -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-atomic-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    func kind(_ path: String) -> mode_t {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : 0
    }

    @Test func symbolicLinksAreWrittenThrough() throws {
        let d = try scratch()
        defer { try? FileManager.default.removeItem(atPath: d) }
        try FileManager.default.createDirectory(atPath: d + "/sub", withIntermediateDirectories: true)
        try "old".write(toFile: d + "/sub/target.txt", atomically: false, encoding: .utf8)
        chmod(d + "/sub/target.txt", 0o640)
        try FileManager.default.createSymbolicLink(atPath: d + "/link.txt", withDestinationPath: "sub/target.txt")
        try FileManager.default.createSymbolicLink(atPath: d + "/link2.txt", withDestinationPath: d + "/link.txt")
        try AtomicFile.write("new", to: d + "/link2.txt")
        #expect(kind(d + "/link.txt") == S_IFLNK && kind(d + "/link2.txt") == S_IFLNK)
        #expect(try String(contentsOfFile: d + "/sub/target.txt", encoding: .utf8) == "new")
        var st = stat()
        stat(d + "/sub/target.txt", &st)
        #expect(st.st_mode & 0o777 == 0o640, "permissions kept")
        // A dangling link gets its target created.
        try FileManager.default.createSymbolicLink(atPath: d + "/dangling.txt", withDestinationPath: "sub/new.txt")
        try AtomicFile.write("x", to: d + "/dangling.txt")
        #expect(kind(d + "/dangling.txt") == S_IFLNK)
        #expect(try String(contentsOfFile: d + "/sub/new.txt", encoding: .utf8) == "x")
        // Loops and links into missing directories are errors; nothing is left behind.
        try FileManager.default.createSymbolicLink(atPath: d + "/a", withDestinationPath: "b")
        try FileManager.default.createSymbolicLink(atPath: d + "/b", withDestinationPath: "a")
        #expect(throws: StructureFileError.self) { try AtomicFile.write("x", to: d + "/a") }
        try FileManager.default.createSymbolicLink(atPath: d + "/nowhere", withDestinationPath: "missing/x")
        #expect(throws: StructureFileError.self) { try AtomicFile.write("x", to: d + "/nowhere") }
        let left = try FileManager.default.contentsOfDirectory(atPath: d).filter { $0.contains(".relaxft-") }
        #expect(left.isEmpty, "\(left)")
    }

    @Test func specialFilesAreNeverReplaced() throws {
        let d = try scratch()
        defer { try? FileManager.default.removeItem(atPath: d) }
        try FileManager.default.createDirectory(atPath: d + "/dir", withIntermediateDirectories: true)
        #expect(throws: StructureFileError.self) { try AtomicFile.write("x", to: d + "/dir") }
        #expect(kind(d + "/dir") == S_IFDIR)
        // /dev/null takes the text, and stays a device.
        try AtomicFile.write("discarded", to: "/dev/null")
        #expect(kind("/dev/null") == S_IFCHR)
        #expect(try AtomicFile.destination("/dev/null") == .stream)
        #expect(try AtomicFile.destination(d + "/new.txt") == .replace(target: d + "/new.txt"))
        guard geteuid() == 0 else { return }  // device nodes need root
        // A node with /dev/full's numbers: every write fails; the error names it and the node stays.
        let full = d + "/full.xyz"
        #expect(mknod(full, S_IFCHR | 0o666, dev_t(1 << 8 | 7)) == 0)
        do {
            try AtomicFile.write("text", to: full)
            Issue.record("a write to a full device succeeded")
        } catch let e as StructureFileError {
            #expect(e.description.contains("full.xyz") && e.description.contains("No space left"), "\(e)")
        }
        #expect(kind(full) == S_IFCHR)
        let w = try AtomicFileWriter(path: full)
        try w.append("partial")
        w.discard()
        #expect(kind(full) == S_IFCHR)
        let left = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).filter { $0.hasPrefix(".full.xyz.relaxft-") }
        #expect(left.isEmpty, "\(left)")
    }
}
