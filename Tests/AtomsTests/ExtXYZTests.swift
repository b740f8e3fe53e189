import Foundation
import Tape
import Testing
@testable import Atoms

@Suite struct ExtXYZTests {
    /// Results of ASE 3.29's key_val_str_to_dict on the same lines.
    @Test func commentLineGrammarFollowsASE() throws {
        func parse(_ line: String) -> [String] { (ExtXYZ.keyValuePairs(line[...]) ?? []).map { "\($0.key)=\($0.value)" } }
        #expect(parse("a=1 b=\"x y\" c") == ["a=1", "b=x y", "c=T"])
        #expect(parse("key = value  other={1 2} third=[3 4] q='it is'") == ["key=value", "other=1 2", "third=3 4", "q=it is"])
        #expect(parse(#"m="a\"b" n=back\\slash"#) == ["m=a\"b", #"n=back\slash"#])
        #expect(parse("o=a=b") == ["o=a=b"])
        #expect(parse("p=\"\" q=r") == ["p=q=r"])  // ASE's quirk: an empty value swallows the next pair
        #expect(parse("Cubic bulk silicon cell") == ["Cubic=T", "bulk=T", "silicon=T", "cell=T"])
        #expect(ExtXYZ.keyValuePairs("= x"[...]) == nil)
    }

    @Test func valuesAreTypedAsASETypesThem() {
        func t(_ raw: String, key: String = "k") -> InfoValue? { ExtXYZ.typedValue(key: key, raw: raw) }
        #expect(t("5") == .int(5))
        #expect(t("+5") == .int(5))
        #expect(t("1_000") == .int(1000))
        #expect(t("5.0") == .double(5))
        #expect(t("99999999999999999999") == .double(1e20))
        #expect(t("1 2 3") == .ints([1, 2, 3]))
        #expect(t("1,2.5") == .doubles([1, 2.5]))
        #expect(t("T") == .bool(true))
        #expect(t("true FALSE T") == .bools([true, false, true]))
        #expect(t("t") == .string("t"))
        #expect(t("") == .ints([]))
        #expect(t(",") == .ints([]))
        #expect(t("00123", key: "UID") == .string("00123"))
        #expect(t("0x10") == .string("0x10"))
        #expect(t("_JSON [1, 2]") == .ints([1, 2]))
        #expect(t("_JSON [1, 2.5]") == .doubles([1, 2.5]))
        #expect(t("_JSON [\"a\", \"b\"]") == .strings(["a", "b"]))
        #expect(t("_JSON \"12\"") == .string("12"))
        #expect(t("_JSON [[1, 2], [3, 4]]") == .string("_JSON [[1, 2], [3, 4]]"))
        #expect(t("_JSON {") == nil)
        #expect(t("nan")?.doubleValue?.isNaN == true)
    }

    static func sample() -> Structure {
        var s = Structure(numbers: [1, 8, 1], positions: Tensor(shape: [3, 3], [0.1, 1e-300, -0.0, 0.7, 2.0 / 3.0, 1e10, 1.0 / 7.0, -Double.leastNonzeroMagnitude, 123456789.123]))
        s.info["text"] = .string("a \"quoted\" \\ value, with = signs")
        s.info["number_like"] = .string("12")
        s.info["bool_like"] = .string("T")
        s.info["empty"] = .string("")
        s.info["lines"] = .string("two\nlines")
        s.info["json_like"] = .string("_JSON x")
        s.info["one_int"] = .ints([3])
        s.info["one_double"] = .doubles([Double.pi])
        s.info["one_bool"] = .bools([false])
        s.info["no_ints"] = .ints([])
        s.info["names"] = .strings(["a b", "c"])
        s.info["nan"] = .double(.nan)
        s.info["tiny"] = .double(.leastNonzeroMagnitude)
        s.info["flags"] = .bools([true, false])
        s.info["virial"] = .doubles([1, 2, 3, 4, 5, 6, 7, 8, 9])  // not symmetric: the transpose must be undone
        s.info["key with spaces"] = .int(-7)
        s.arrays["pair"] = .ints([1, 2, 3, 4, 5, 6], width: 2)
        s.arrays["mask"] = .bools([true, false, true, false, false, true, true, true, false], width: 3)
        s.arrays["label"] = .strings(["H1", "O1", "H2"])
        s.arrays["charges"] = .doubles(Tensor(shape: [3, 1], [0.4, -0.8, 0.4]))
        s.customMasses = [2.014, 15.999, 1.008]
        s.fixed = [false, true, false]
        return s
    }

    @Test func everyInfoAndArrayKindRoundTrips() throws {
        let s = Self.sample()
        let text = try StructureIO.text([s], format: .extxyz)
        let back = try #require(try StructureIO.parse(text, format: .extxyz).first)
        var expected = s
        expected.info["nan"] = nil
        var got = back
        #expect(got.info["nan"]?.doubleValue?.isNaN == true)
        got.info["nan"] = nil
        expectBitIdentical(expected, got, context: "sample")
        #expect(text.contains("Properties=species:S:1:pos:R:3:move_mask:L:1:masses:R:1:pair:I:2:mask:L:3:label:S:1:charge:R:1"))
        #expect(text.contains(#"virial="1.0 4.0 7.0 2.0 5.0 8.0 3.0 6.0 9.0""#))
        #expect(text.contains(#"number_like="_JSON \"12\"""#))
        #expect(text.contains("no_ints=, "))
    }

    @Test func voigtStressIsWrittenAsFullMatrix() throws {
        var s = Structure(numbers: [18], positions: .zeros([1, 3]))
        s.info["stress"] = .doubles([1, 2, 3, 4, 5, 6])
        let back = try #require(try StructureIO.parse(try StructureIO.text([s], format: .extxyz), format: .extxyz).first)
        #expect(back.stress == s.stress)
        #expect(back.info["stress"] == .doubles([1, 6, 5, 6, 2, 4, 5, 4, 3]))
    }

    @Test func writerRejectsWhatCannotBeReadBack() {
        func fails(_ s: Structure, _ text: String) {
            #expect {
                _ = try StructureIO.text([s], format: .extxyz, path: "out.xyz")
            } throws: { e in
                guard let e = e as? StructureFileError else { return false }
                return e.kind == .unwritableStructure && e.description.contains(text)
            }
        }
        let base = Structure(numbers: [18, 18], positions: Tensor(shape: [2, 3], [0, 0, 0, 3, 0, 0]))
        var s = base
        s.arrays["my forces"] = .doubles(.zeros([2, 3]))
        fails(s, "'my forces'")
        s = base
        s.arrays["positions"] = .doubles(.zeros([2, 3]))
        fails(s, "'positions'")
        s = base
        s.arrays["short"] = .ints([1], width: 1)
        fails(s, "2 rows in per-atom array 'short'")
        s = base
        s.arrays["zero_width"] = .ints([], width: 0)
        fails(s, "per-atom array 'zero_width'")
        s = base
        s.fixed = [true]
        fails(s, "2 fixed flags and masses")
        s = base
        s.positions = .zeros([3, 3])
        fails(s, "positions [2, 3]")
        s = base
        s.arrays["names"] = .strings(["a b", "c"])
        fails(s, "'a b'")
        s = base
        s.info["pbc"] = .bool(true)
        fails(s, "'pbc'")
        s = base
        s.info["stress"] = .doubles([1, 2, 3])
        fails(s, "info 'stress'")
        s = base
        s.positions[1, 2] = .nan
        fails(s, "finite positions")
        s = base
        s.pbc = [true, true, false]
        fails(s, "three independent lattice vectors")
    }

    @Test func plainXYZAndMultiFrameFiles() throws {
        let text = "2\nwater dimer part\nO 0 0 0\nH 0.96 0 0\n1\nLattice=\"3 0 0 0 3 0 0 0 3\" pbc=\"T T F\"\nAr 1 1 1\n"
        let frames = try StructureIO.parse(text, format: .extxyz)
        #expect(frames.count == 2)
        #expect(frames[0].info.keys == ["water", "dimer", "part"])
        #expect(frames[0].pbc == [false, false, false] && !frames[0].hasCell)
        #expect(frames[1].pbc == [true, true, false] && frames[1].volume == 27)
        #expect(try StructureIO.parse("1\n\nAr 0 0 0\n\n\n", format: .extxyz).count == 1)  // trailing blank lines
        #expect(try StructureIO.parse("1\r\n\r\nAr 0 0 0\r\n", format: .extxyz).first?.numbers == [18])
    }
}
