import Atoms
import Foundation

let convertCommand = Command(
    spec: CommandSpec(
        name: "convert", summary: "convert structure files (extended XYZ, VASP POSCAR, CIF)",
        usage: "IN (OUT | -o OUT) [--from FMT] [--to FMT] [--frames SLICE] [--species 'A B …'] [--direct] [--json] [--quiet]",
        options: [
            Vocabulary.from,
            Vocabulary.to,
            Vocabulary.frames.detail("the frames to keep"),
            Vocabulary.out.detail("the converted file (or give it as the second argument)"),
            Vocabulary.json.detail("what was converted, as one object"),
            Vocabulary.quiet.detail("no summary line"),
            OptionSpec("--species", value: "'A B …'", help: "element symbols of the atom groups of a VASP 4 POSCAR (no species line)"),
            OptionSpec("--direct", help: "write POSCAR coordinates as Direct (fractional) rather than Cartesian"),
        ],
        details: """
            Formats follow the file names: .xyz and .extxyz are extended XYZ; .vasp, .poscar and names containing
            POSCAR or CONTCAR are VASP; .cif is CIF (read only). Every number is written in full precision, so ASE
            and relaxft read the output back bit for bit. Bad input is reported with its file, line, what was
            expected and what was found (exit code 2); the output is written to a temporary file and renamed into
            place, so nothing is written when anything fails.
            """),
    run: runConvert)

func runConvert(_ args: ParsedArguments) throws -> Int32 {
    var names = args.positionals
    if let o = args.string("out") { names.append(o) }
    guard names.count == 2 else {
        throw UsageError(command: "convert", message: "expects IN and OUT (or IN and -o OUT), got \(names.count) file name(s)")
    }
    let (input, output) = (names[0], names[1])
    func format(_ option: String) throws -> StructureFormat? {
        guard let name = args.string(option) else { return nil }
        guard let f = StructureFormat(name: name) else {
            throw UsageError(command: "convert", message: "--\(option) expects extxyz, vasp or cif, got '\(name)'")
        }
        return f
    }
    let from = try format("from"), to = try format("to")
    if to == .cif { throw UsageError(command: "convert", message: "--to cif: CIF is read only (write extxyz or vasp)") }
    let selection = try frameSelection(args)
    guard let outFormat = to ?? StructureFormat(path: output) else {
        throw UsageError(command: "convert", message: "cannot tell the format of '\(output)' from its name; use --to extxyz or --to vasp")
    }
    if outFormat == .cif { throw UsageError(command: "convert", message: "'\(output)': CIF is read only (write extxyz or vasp)") }
    let species = args.string("species").map { $0.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init) }

    let structures = try StructureIO.read(input, format: from, options: ReadOptions(species: species))
    guard let picked = selection.indices(count: structures.count), !picked.isEmpty else {
        throw UsageError(command: "convert", message: "--frames \(args.string("frames") ?? "") selects no frame of \(input) (\(structures.count) frame(s))")
    }
    let chosen = picked.map { structures[$0] }
    try StructureIO.write(chosen, output, format: outFormat, options: WriteOptions(vaspDirect: args.has("direct")))

    let sizes = Set(chosen.map(\.count))
    let atoms = sizes.count == 1 ? "\(sizes.first ?? 0) atoms" : "\(sizes.min() ?? 0)–\(sizes.max() ?? 0) atoms"
    let inFormat = from ?? StructureFormat(path: input)
    if args.has("json") {
        print(jsonObject([("input", jsonString(input)), ("output", jsonString(output)), ("from", jsonString(inFormat?.rawValue ?? "?")),
                          ("to", jsonString(outFormat.rawValue)), ("frames", "\(chosen.count)"), ("frames_in_input", "\(structures.count)"),
                          ("atoms", "[" + chosen.map { "\($0.count)" }.joined(separator: ", ") + "]")]))
    }
    if !args.has("quiet") {
        printError("relaxft convert: \(chosen.count) of \(structures.count) frame(s), \(atoms), \(input) (\(inFormat?.rawValue ?? "?")) -> \(output) (\(outFormat.rawValue))")
    }
    return 0
}
