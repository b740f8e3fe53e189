import Foundation
import Tape
import Testing
@testable import Atoms

/// One malformed file under Tests/AtomsTests/Malformed/ and the error it must produce.
struct MalformedCase: Sendable, CustomTestStringConvertible {
    let file: String
    let kind: StructureFileError.Kind
    let line: Int?
    let expected: String
    let found: String
    var testDescription: String { file }
}

@Suite struct MalformedInputTests {
    static let cases: [MalformedCase] = [
        // Extended XYZ
        .init(file: "truncated_frame.xyz", kind: .truncatedFrame, line: 1, expected: "a comment line and 4 atom lines in frame 1", found: "3 lines before the end of the file"),
        .init(file: "truncated_second_frame.xyz", kind: .truncatedFrame, line: 4, expected: "3 atom lines in frame 2", found: "3 lines"),
        .init(file: "wrong_column_count.xyz", kind: .wrongColumnCount, line: 4, expected: "4 columns (Properties=species:S:1:pos:R:3)", found: "3"),
        .init(file: "extra_column.xyz", kind: .wrongColumnCount, line: 4, expected: "4 columns", found: "5"),
        .init(file: "unknown_element.xyz", kind: .unknownElement, line: 4, expected: "a chemical symbol", found: "'Qq'"),
        .init(file: "bad_atomic_number.xyz", kind: .unknownElement, line: 4, expected: "an atomic number from 0 to 118", found: "200"),
        .init(file: "nan_coordinate.xyz", kind: .nonFinite, line: 4, expected: "a finite coordinate in column 4 (pos)", found: "'nan'"),
        .init(file: "inf_coordinate.xyz", kind: .nonFinite, line: 4, expected: "a finite coordinate in column 2 (pos)", found: "'inf'"),
        .init(file: "non_number_coordinate.xyz", kind: .badNumber, line: 4, expected: "a real number in column 4 (pos)", found: "'1.0abc'"),
        .init(file: "hex_coordinate.xyz", kind: .badNumber, line: 4, expected: "a real number in column 2 (pos)", found: "'0x1p3'"),
        .init(file: "singular_cell.xyz", kind: .singularCell, line: 2, expected: "three independent lattice vectors", found: "volume 0.0"),
        .init(file: "atoms_too_close.xyz", kind: .atomsTooClose, line: 5, expected: "at least 0.1 Å apart", found: "atoms 2 and 3 (lines 4 and 5) 0.05 Å apart"),
        .init(file: "atoms_too_close_periodic.xyz", kind: .atomsTooClose, line: 4, expected: "at least 0.1 Å apart", found: "atoms 1 and 2 (lines 3 and 4) 0.06 Å apart"),
        .init(file: "bad_lattice.xyz", kind: .badLattice, line: 2, expected: "9 numbers", found: "'5.0 0.0 0.0 0.0 5.0 0.0 0.0 0.0'"),
        .init(file: "bad_lattice_text.xyz", kind: .badLattice, line: 2, expected: "9 numbers", found: "'a b c d e f g h i'"),
        .init(file: "bad_properties_type.xyz", kind: .badProperties, line: 2, expected: "type R, I, S or L", found: "'pos:X:3'"),
        .init(file: "bad_properties_triples.xyz", kind: .badProperties, line: 2, expected: "name:type:width triples", found: "'species:S:1:pos:R'"),
        .init(file: "missing_pos.xyz", kind: .badProperties, line: 2, expected: "a pos:R:3 column", found: "'species:S:1'"),
        .init(file: "bad_pbc.xyz", kind: .badPBC, line: 2, expected: "three logicals", found: "'T T'"),
        .init(file: "bad_header.xyz", kind: .badHeader, line: 1, expected: "the number of atoms of frame 1", found: "'eight'"),
        .init(file: "blank_line_between_frames.xyz", kind: .badHeader, line: 5, expected: "the end of the file after a blank line (line 4)", found: "'1'"),
        .init(file: "empty.xyz", kind: .badHeader, line: nil, expected: "at least one frame", found: "an empty file"),
        .init(file: "bad_integer_column.xyz", kind: .badNumber, line: 4, expected: "an integer in column 5 (tags)", found: "'1.5'"),
        .init(file: "bad_logical.xyz", kind: .badValue, line: 4, expected: "T or F in column 5 (move_mask)", found: "'X'"),
        .init(file: "partial_move_mask.xyz", kind: .unsupported, line: 4, expected: "all T or all F", found: "'T T F'"),
        .init(file: "bad_json.xyz", kind: .badValue, line: 2, expected: "valid JSON after '_JSON' in 'meta'", found: "'_JSON {\"a\": '"),
        .init(file: "bad_stress.xyz", kind: .badValue, line: 2, expected: "9 numbers (a 3×3 matrix) or 6 Voigt values for 'stress'", found: "'1 2 3'"),
        .init(file: "key_without_name.xyz", kind: .syntax, line: 2, expected: "key=value pairs", found: "'=' without a key"),
        .init(file: "absurd_column_width.xyz", kind: .badProperties, line: 2, expected: "width from 1 to 100000", found: "'x:R:9223372036854775807'"),
        // VASP POSCAR
        .init(file: "count_mismatch.vasp", kind: .countMismatch, line: 7, expected: "one count per element symbol (2 symbols on line 6)", found: "1 count(s)"),
        .init(file: "truncated_atoms.vasp", kind: .truncatedFrame, line: 7, expected: "8 atom lines (counts 8)", found: "3 before the end of the file"),
        .init(file: "vasp4_without_species.vasp", kind: .missingSpecies, line: 6, expected: "a species hint", found: "first line 'silicon carbide, relaxed'"),
        .init(file: "bad_scale.vasp", kind: .badNumber, line: 2, expected: "a scale factor", found: "'scale'"),
        .init(file: "bad_coordinate_mode.vasp", kind: .syntax, line: 8, expected: "Direct or Cartesian", found: "'Fractional'"),
        .init(file: "singular_cell.vasp", kind: .singularCell, line: 3, expected: "three independent lattice vectors", found: "volume 0.0"),
        .init(file: "partial_selective_dynamics.vasp", kind: .unsupported, line: 11, expected: "flags all T or all F", found: "'T T F'"),
        .init(file: "unknown_species.vasp", kind: .unknownElement, line: 6, expected: "a chemical symbol", found: "'Xx'"),
        .init(file: "short_lattice_vector.vasp", kind: .badLattice, line: 4, expected: "3 numbers (lattice vector 2)", found: "'0.0 5.43'"),
        .init(file: "nan_coordinate.vasp", kind: .nonFinite, line: 10, expected: "a finite coordinate in column 2", found: "'NaN'"),
        .init(file: "missing_selective_flags.vasp", kind: .wrongColumnCount, line: 11, expected: "3 coordinates and 3 selective-dynamics flags", found: "3 columns"),
        .init(file: "absurd_atom_count.vasp", kind: .truncatedFrame, line: 7, expected: "one line per atom (counts 1000000000000 9223372036854775807)", found: "9 lines in the whole file"),
        .init(file: "atoms_too_close.vasp", kind: .atomsTooClose, line: 10, expected: "at least 0.1 Å apart", found: "atoms 1 and 2 (lines 9 and 10) 0.00543 Å apart"),
        // CIF
        .init(file: "partial_occupancy.cif", kind: .unsupported, line: 15, expected: "partial occupancy", found: "occupancy 0.5 for site 'Au1'"),
        .init(file: "space_group_without_operations.cif", kind: .unsupported, line: 8, expected: "symmetry operations", found: "space group 'F d -3 m', number 227 without operations"),
        .init(file: "bad_symmetry_operation.cif", kind: .syntax, line: 11, expected: "a symmetry operation", found: "'-x,y'"),
        .init(file: "unterminated_text_field.cif", kind: .syntax, line: 3, expected: "';' to close the text field", found: "the end of the file"),
        .init(file: "missing_cell_length.cif", kind: .badLattice, line: 1, expected: "_cell_length_b in data_x", found: "none"),
        .init(file: "cartesian_sites.cif", kind: .unsupported, line: 1, expected: "Cartesian and mmCIF sites are not supported", found: "data_x without fractional coordinates"),
        .init(file: "loop_count_mismatch.cif", kind: .countMismatch, line: 8, expected: "a multiple of 4 values", found: "7 values"),
        .init(file: "unknown_site_element.cif", kind: .unknownElement, line: 14, expected: "a chemical symbol", found: "'Qq1'"),
        .init(file: "bad_fractional_coordinate.cif", kind: .badNumber, line: 14, expected: "a fractional coordinate", found: "'?'"),
        .init(file: "mixed_site.cif", kind: .unsupported, line: 18, expected: "distinct sites for distinct elements", found: "'Cl1' on the site of 'Na1' (line 17)"),
        .init(file: "unclosed_quote.cif", kind: .syntax, line: 2, expected: "a closing ' quote", found: "'sodium chloride"),
        .init(file: "no_data_block.cif", kind: .syntax, line: 2, expected: "a data_ block header", found: "'_cell_length_a'"),
    ]

    @Test func corpusHasAFileForEveryCaseAndACaseForEveryFile() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Repo.malformed.path)
        #expect(Set(files) == Set(Self.cases.map(\.file)))
        #expect(files.count >= 30)
    }

    @Test(arguments: cases)
    func yieldsItsSpecificError(_ c: MalformedCase) {
        let path = Repo.malformed.appendingPathComponent(c.file).path
        do {
            let s = try StructureIO.read(path)
            Issue.record("\(c.file) was read (\(s.count) frames) instead of failing")
        } catch let e as StructureFileError {
            #expect(e.path == path)
            #expect(e.kind == c.kind, "\(e)")
            #expect(e.line == c.line, "\(e)")
            #expect(e.expected.contains(c.expected), "\(e)")
            #expect(e.found.contains(c.found), "\(e)")
            let location = c.line.map { "\(path):\($0): " } ?? "\(path): "
            #expect(e.description.hasPrefix(location + c.kind.rawValue + ": expected "), "\(e)")
        } catch {
            Issue.record("\(c.file): not a StructureFileError: \(error)")
        }
    }
}

@Suite struct MutationTests {
    /// Randomly damaged fixtures (lines dropped, duplicated or swapped, characters replaced, text cut) are read or
    /// rejected with a StructureFileError; nothing else (a crash would end the test process).
    @Test(arguments: Repo.fixtureNames)
    func damagedFilesAreReadOrRejected(name: String) throws {
        let format = try #require(StructureFormat(path: name))
        let original = try String(contentsOfFile: Repo.structure(name), encoding: .utf8)
        var rng = SeededGenerator(seed: UInt64(name.utf8.reduce(0) { $0 &* 31 &+ Int($1) }.magnitude))
        let alphabet = Array("0123456789 .-+eEnaNTF:=\"'{}[]_;#\tXx\n")
        var rejected = 0
        for _ in 0..<150 {
            var lines = original.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            for _ in 0..<(1 + rng.int(below: 3)) {
                let k = rng.int(below: lines.count)
                switch rng.int(below: 5) {
                case 0: lines.remove(at: k)
                case 1: lines.insert(lines[k], at: k)
                case 2: lines.swapAt(k, rng.int(below: lines.count))
                case 3:
                    var chars = Array(lines[k])
                    if !chars.isEmpty { chars[rng.int(below: chars.count)] = alphabet[rng.int(below: alphabet.count)] }
                    lines[k] = String(chars)
                default: lines = Array(lines.prefix(k)) + [String(lines[k].prefix(rng.int(below: lines[k].count + 1)))]
                }
                if lines.isEmpty { lines = [""] }
            }
            do {
                _ = try StructureIO.parse(lines.joined(separator: "\n"), format: format, path: name)
            } catch is StructureFileError {
                rejected += 1
            }
        }
        #expect(rejected > 0)
    }
}
