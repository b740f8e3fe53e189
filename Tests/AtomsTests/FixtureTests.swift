import Foundation
import Tape
import Testing
@testable import Atoms

/// Every fixture in Fixtures/structures/ (written by ASE, or by hand and read by ASE) read by relaxft equals what
/// ASE reads, and survives relaxft's writers.
@Suite struct FixtureTests {
    @Test func expectedJSONListsEveryFixture() {
        #expect(Repo.expected["ase_version"]?.stringValue == "3.29.0")
        #expect(Repo.fixtureNames.count == 10)
        let onDisk = (try? FileManager.default.contentsOfDirectory(atPath: Repo.structures.path)) ?? []
        #expect(Set(Repo.fixtureNames) == Set(onDisk.filter { !$0.hasSuffix(".json") && !$0.hasSuffix(".md") }))
    }

    @Test(arguments: Repo.fixtureNames)
    func readsWhatASEReads(name: String) throws {
        let entry = try #require(Repo.expected["files"]?[name])
        let format = try #require(entry["format"]?.stringValue.flatMap(StructureFormat.init(name:)))
        let frames = try StructureIO.read(Repo.structure(name))
        let expected = entry["frames"]?.array ?? []
        #expect(frames.count == expected.count)
        #expect(StructureFormat(path: name) == format)
        for (k, (s, e)) in zip(frames, expected).enumerated() {
            // ASE's CIF reader converts sites to Cartesian and back before expanding them: not bit for bit.
            expectMatchesASE(s, e, positionTolerance: format == .cif ? 1e-13 : nil, context: "\(name) frame \(k)")
        }
    }

    @Test(arguments: Repo.fixtureNames)
    func extxyzRoundTripIsBitExact(name: String) throws {
        let frames = try StructureIO.read(Repo.structure(name))
        let text = try StructureIO.text(frames, format: .extxyz)
        let again = try StructureIO.parse(text, format: .extxyz)
        #expect(again.count == frames.count)
        for (k, (a, b)) in zip(frames, again).enumerated() { expectBitIdentical(a, b, context: "\(name) frame \(k)") }
        // Writing what was read back gives the same text.
        #expect(try StructureIO.text(again, format: .extxyz) == text)
    }

    @Test(arguments: Repo.fixtureNames)
    func poscarRoundTripIsBitExact(name: String) throws {
        for (k, s) in try StructureIO.read(Repo.structure(name)).enumerated() where s.isPeriodic {
            let again = try StructureIO.parse(try StructureIO.text([s], format: .vasp), format: .vasp)
            let back = try #require(again.first)
            #expect(back.numbers == s.numbers, "\(name) frame \(k)")
            #expect(back.positions.bitwiseEqual(s.positions), "\(name) frame \(k): positions")
            #expect(back.cell.bitwiseEqual(s.cell), "\(name) frame \(k): cell")
            #expect(back.fixed == s.fixed, "\(name) frame \(k): fixed")
            #expect(back.pbc == [true, true, true])
        }
    }

    @Test func writtenFilesRoundTripThroughDisk() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-io-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let frames = try StructureIO.read(Repo.structure("cual_triclinic.extxyz"))
        let xyz = dir.appendingPathComponent("out.xyz").path
        try StructureIO.write(frames, xyz)
        for (a, b) in zip(frames, try StructureIO.read(xyz)) { expectBitIdentical(a, b, context: "out.xyz") }
        let poscar = dir.appendingPathComponent("POSCAR").path
        try StructureIO.write([frames[0]], poscar)
        let back = try #require(try StructureIO.read(poscar).first)
        #expect(back.positions.bitwiseEqual(frames[0].positions) && back.fixed == frames[0].fixed)
        // No temporary files are left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["POSCAR", "out.xyz"])
    }

    @Test func aseReadsTheSameDirectAndCartesianPOSCAR() throws {
        let direct = try #require(try StructureIO.read(Repo.structure("si_vacancy_direct.vasp")).first)
        let cartesian = try #require(try StructureIO.read(Repo.structure("si_vacancy_cartesian.vasp")).first)
        #expect(direct.positions.maxAbsDifference(cartesian.positions) < 1e-12)
        let fixed = try #require(try StructureIO.read(Repo.structure("si_vacancy_fixed.vasp")).first)
        #expect(fixed.fixed?.filter { $0 }.count == 15)
    }

    @Test func symmetricCIFsExpandToTheFullCell() throws {
        let diamond = try #require(try StructureIO.read(Repo.structure("diamond_fd3m.cif")).first)
        #expect(diamond.count == 8 && diamond.numbers.allSatisfy { $0 == 14 })
        #expect(diamond.cell.array == [5.431, 0, 0, 0, 5.431, 0, 0, 0, 5.431])
        let rutile = try #require(try StructureIO.read(Repo.structure("rutile.cif")).first)
        #expect(rutile.numbers == [22, 22, 8, 8, 8, 8])
    }
}
