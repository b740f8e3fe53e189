import Foundation
import Tape
import Testing
@testable import Atoms

@Suite struct FormatTests {
    @Test func formatsFollowFileNamesAndNames() {
        #expect(StructureFormat(path: "a/b.xyz") == .extxyz)
        #expect(StructureFormat(path: "b.EXTXYZ") == .extxyz)
        #expect(StructureFormat(path: "run/POSCAR") == .vasp)
        #expect(StructureFormat(path: "CONTCAR.relaxed") == .vasp)
        #expect(StructureFormat(path: "Si.POSCAR") == .vasp)
        #expect(StructureFormat(path: "x.vasp") == .vasp)
        #expect(StructureFormat(path: "x.cif") == .cif)
        #expect(StructureFormat(path: "x.dat") == nil)
        #expect(StructureFormat(name: "XYZ") == .extxyz && StructureFormat(name: "poscar") == .vasp && StructureFormat(name: "pdb") == nil)
        #expect(throws: StructureFileError.self) { try StructureIO.read("nowhere.dat") }
    }

    @Test(arguments: [
        ("0:10:2", 0, []), ("::-1", 0, []), ("-1", 0, nil), ("0", 0, nil),
        ("0:10:2", 1, [0]), ("::-1", 1, [0]), ("5", 1, nil), ("1::2", 1, []), ("-2::-1", 1, []), ("4:-6:-1", 1, [0]),
        ("0:10:2", 7, [0, 2, 4, 6]), ("::-1", 7, [6, 5, 4, 3, 2, 1, 0]), (":3", 7, [0, 1, 2]), ("-3:", 7, [4, 5, 6]),
        ("-1", 7, [6]), ("0", 7, [0]), ("5", 7, [5]), ("1::2", 7, [1, 3, 5]), ("10:0:-3", 7, [6, 3]),
        ("-100:100", 7, [0, 1, 2, 3, 4, 5, 6]), ("::", 7, [0, 1, 2, 3, 4, 5, 6]), ("2:2", 7, []), ("-2::-1", 7, [5, 4, 3, 2, 1, 0]),
        ("4:-6:-1", 7, [4, 3, 2]),
    ] as [(String, Int, [Int]?)])
    func frameSelectionIsPythonSlicing(text: String, count: Int, expected: [Int]?) throws {
        let s = try #require(FrameSelection(text))
        #expect(s.indices(count: count) == expected)
    }

    @Test func badFrameSelectionsAreRejected() {
        for text in ["", "a", "1:2:0", "1:2:3:4", "1.5", "::x"] { #expect(FrameSelection(text) == nil, "\(text)") }
    }

    @Test func poscarOptionsAndVariants() throws {
        let body = "1.0\n 4.35 0 0\n 0 4.35 0\n 0 0 4.35\n"
        let atoms = "Direct\n0 0 0\n0.25 0.25 0.25\n"
        // VASP 4: species from a hint, or from the first line's symbols.
        let vasp4 = "comment\n" + body + "1 1\n" + atoms
        #expect(try StructureIO.parse(vasp4, format: .vasp, options: ReadOptions(species: ["Si", "C"])).first?.numbers == [14, 6])
        #expect(try StructureIO.parse("Si C\n" + body + "1 1 ! counts\n" + atoms, format: .vasp).first?.numbers == [14, 6])
        // POTCAR labels and hashes, Cartesian 'K', comments after the counts.
        let labels = "x\n" + body + "Si_pv/1a2b C_s\n1 1 ! two atoms\nK\n0 0 0\n1.0875 1.0875 1.0875\n"
        let s = try #require(try StructureIO.parse(labels, format: .vasp).first)
        #expect(s.numbers == [14, 6] && s.positions[1, 0] == 1.0875)
        // Negative scale: the cell volume.
        let volume = try #require(try StructureIO.parse("Si\n-125.0\n 1 0 0\n 0 1 0\n 0 0 1\nSi\n1\nDirect\n0 0 0\n", format: .vasp).first)
        #expect(Swift.abs(volume.volume - 125) < 1e-12)
        // Three scale factors scale the Cartesian axes.
        let three = try #require(try StructureIO.parse("Si\n1 2 3\n 1 0 0\n 0 1 0\n 0 0 1\nSi\n1\nCartesian\n1 1 1\n", format: .vasp).first)
        #expect(three.cell.array == [1, 0, 0, 0, 2, 0, 0, 0, 3] && three.positions.array == [1, 2, 3])
    }

    @Test func poscarKeepsAtomOrderWithRepeatedGroups() throws {
        var s = Structure(numbers: [14, 6, 14, 14], positions: Tensor(shape: [4, 3], [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]),
                          cell: Tensor(shape: [3, 3], [5, 0, 0, 0.3, 5, 0, 0.2, 0.1, 5]), pbc: [true, true, true])
        s.fixed = [true, false, false, true]
        let text = try StructureIO.text([s], format: .vasp)
        #expect(text.contains("Si   C    Si  \n") && text.contains("Selective dynamics\nCartesian\n"))
        let back = try #require(try StructureIO.parse(text, format: .vasp).first)
        #expect(back.numbers == s.numbers && back.fixed == s.fixed && back.positions.bitwiseEqual(s.positions))
        let direct = try #require(try StructureIO.parse(try StructureIO.text([s], format: .vasp, options: WriteOptions(vaspDirect: true)), format: .vasp).first)
        #expect(direct.positions.maxAbsDifference(s.positions) < 1e-14)
        #expect(throws: StructureFileError.self) { try StructureIO.text([s, s], format: .vasp) }
        #expect(throws: StructureFileError.self) { try StructureIO.text([Structure(numbers: [1], positions: .zeros([1, 3]))], format: .vasp) }
        #expect(throws: StructureFileError.self) { try StructureIO.text([s], format: .cif) }
    }

    @Test func cifSymmetryOperationsParse() throws {
        let op = try #require(CIF.operation("1/2-y, x-y ,Z+0.25"))
        #expect(op.rotation == [[0, -1, 0], [1, -1, 0], [0, 0, 1]])
        #expect(op.translation == [0.5, 0, 0.25])
        #expect(CIF.operation("-x+1/3,-y,-z")?.translation == [1.0 / 3.0, 0, 0])
        for bad in ["x,y", "x,y,w", "x,y,z+", "x,y,1/0", "x,,z"] { #expect(CIF.operation(bad) == nil, "\(bad)") }
        #expect(CIF.pyMod(-0.25) == 0.75 && CIF.pyMod(-1e-17) == 1.0 && CIF.pyMod(-0.0) == 0 && CIF.pyMod(2.5) == 0.5)
    }

    @Test func cifDeuteriumAndSingleSites() throws {
        let text = """
            data_d2
            _cell_length_a 5
            _cell_length_b 5
            _cell_length_c 5
            _cell_angle_alpha 90
            _cell_angle_beta 90
            _cell_angle_gamma 120
            _atom_site_label D1
            _atom_site_fract_x 0.1
            _atom_site_fract_y 0.2
            _atom_site_fract_z 0.3
            """
        let s = try #require(try StructureIO.parse(text, format: .cif).first)
        #expect(s.numbers == [1] && s.customMasses == [2.01355])
        #expect(Swift.abs(s.cell[1, 0] + 2.5) < 1e-12 && s.cell[0, 1] == 0)
    }

    @Test func failedWritesLeaveTheOldFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-write-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("keep.xyz").path
        try "old\n".write(toFile: path, atomically: false, encoding: .utf8)
        var bad = Structure(numbers: [18], positions: .zeros([1, 3]))
        bad.positions[0, 0] = .infinity
        #expect(throws: StructureFileError.self) { try StructureIO.write([bad], path) }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "old\n")
        #expect(throws: StructureFileError.self) { try StructureIO.write([bad], dir.appendingPathComponent("missing/x.xyz").path) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["keep.xyz"])
        // A good write replaces the content.
        try StructureIO.write([Structure(numbers: [18], positions: .zeros([1, 3]))], path)
        #expect(try StructureIO.read(path).first?.numbers == [18])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["keep.xyz"])
    }

    @Test func numbersFollowPythonsGrammar() {
        #expect(PyNumber.double("1e5") == 1e5 && PyNumber.double(".5") == 0.5 && PyNumber.double("5.") == 5 && PyNumber.double("-Infinity") == -.infinity)
        #expect(PyNumber.double("1_0.5") == 10.5)
        for bad in ["0x1p3", "1e", "e5", ".", "1__0", "_1", "1_", "1.0.0", " 1", "1d5", ""] { #expect(PyNumber.double(bad) == nil, "\(bad)") }
        #expect(PyNumber.int("+7") == 7 && PyNumber.int("-0") == 0 && PyNumber.int("1.0") == nil && PyNumber.int("99999999999999999999") == nil)
        #expect(Elements.number(forSymbol: "SI") == 14 && Elements.number(forSymbol: "x") == 0 && Elements.number(forSymbol: "Qq") == nil)
    }
}

@Suite struct CloseAtomTests {
    /// Shortest distance between distinct atoms or an atom and its images, by brute force over all images whose
    /// shift along each axis is at most d / (cell height) + 2.
    static func bruteForce(_ s: Structure, within d: Double) -> Double {
        let x = s.positions.array, c = s.cell.array
        var best = Double.infinity
        func height(_ k: Int) -> Double {
            let (a, b) = (Tensor(c[3 * ((k + 1) % 3)..<3 * ((k + 1) % 3) + 3].map { $0 }), Tensor(c[3 * ((k + 2) % 3)..<3 * ((k + 2) % 3) + 3].map { $0 }))
            let n = Tensor([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])
            return s.volume / n.norm
        }
        let m = (0..<3).map { Int((d / height($0)).rounded(.up)) + 2 }
        let r = { (k: Int) in s.pbc[k] ? -m[k]...m[k] : 0...0 }
        for i in 0..<s.count { for j in i..<s.count {
            for a in r(0) { for b in r(1) { for e in r(2) where i != j || a != 0 || b != 0 || e != 0 {
                let v = (0..<3).map { k in x[3 * j + k] - x[3 * i + k] + Double(a) * c[k] + Double(b) * c[3 + k] + Double(e) * c[6 + k] }
                best = min(best, (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).squareRoot())
            } } }
        } }
        return best
    }

    @Test func findsTheSamePairsAsBruteForceOnSkewedThinCells() {
        var rng = SeededGenerator(seed: 11)
        var checked = 0
        for trial in 0..<300 {
            let n = 2 + rng.int(below: 12)
            // Skewed cells, some thinner than the threshold's range of images.
            var cell = rng.uniformTensor([3, 3], -1.5, 1.5)
            for k in 0..<3 { cell[k, k] = 0.15 + 2.5 * rng.uniform() }
            let frac = rng.uniformTensor([n, 3], -0.5, 1.5)
            let pbc = (0..<3).map { _ in rng.uniform() < 0.75 }
            let s = Structure(numbers: Array(repeating: 18, count: n), positions: Tensor.matmul(frac, cell), cell: cell, pbc: pbc)
            guard cellIsRegular(cell) else { continue }
            let d = [0.1, 0.4, 0.9][trial % 3]
            let shortest = Self.bruteForce(s, within: d)
            let found = closePair(s, below: d)
            #expect((found != nil) == (shortest < d), "trial \(trial): brute force \(shortest), found \(String(describing: found))")
            if let found { #expect(found.distance < d) }
            checked += 1
        }
        #expect(checked > 200)
    }

    @Test func moleculesAndLargeCellsAreChecked() {
        let molecule = Structure(numbers: [6, 1, 1], positions: Tensor(shape: [3, 3], [0, 0, 0, 1.09, 0, 0, 1.09, 0.05, 0]))
        #expect(closePair(molecule, below: 0.1)?.j == 2)
        // 4096-atom diamond Si: fast, and nothing too close.
        var x: [Double] = []
        let basis: [[Double]] = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0], [0.25, 0.25, 0.25], [0.25, 0.75, 0.75], [0.75, 0.25, 0.75], [0.75, 0.75, 0.25]]
        for i in 0..<8 { for j in 0..<8 { for k in 0..<8 { for b in basis { x += [(Double(i) + b[0]) * 5.431, (Double(j) + b[1]) * 5.431, (Double(k) + b[2]) * 5.431] } } } }
        let si = Structure(numbers: Array(repeating: 14, count: 4096), positions: Tensor(shape: [4096, 3], x),
                           cell: Tensor(shape: [3, 3], [43.448, 0, 0, 0, 43.448, 0, 0, 0, 43.448]), pbc: [true, true, true])
        let start = Date()
        #expect(closePair(si, below: 0.1) == nil)
        #expect(Date().timeIntervalSince(start) < 2)
        #expect(closePair(si, below: 2.4)?.distance ?? 0 > 2.35)
    }
}
