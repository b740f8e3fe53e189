import Foundation
import Testing
import Atoms
import Tape
@testable import Potentials

@Suite("Potential validation: parameters, coverage, model files")
struct ValidationTests {
    @Test(arguments: ["sw:sigma=-1", "sw:sigma=0", "sw:a=0", "sw:gamma=-1", "sw:lambda=-2", "sw:cos_theta0=1.5", "sw:epsilon=-1", "sw:a=100",
                      "lj:rc=0", "lj:rc=-3", "lj:sigma=0", "lj:sigma=-1", "lj:epsilon=-1", "lj:rc=1e6", "lj:ro=5,rc=4,smooth=true", "", "  "])
    func nonsenseSpecificationsAreRefused(_ spec: String) {
        #expect(throws: PotentialSpecError.self) { _ = try PotentialSpec.parse(spec) }
    }

    @Test(arguments: ["sw", "lj", "sw:sigma=2.2,lambda=18", "lj:sigma=2.3,epsilon=0.1,rc=5.5,ro=4.5,smooth=true", "sw:lambda=0"])
    func sensibleSpecificationsAreAccepted(_ spec: String) throws {
        _ = try PotentialSpec.parse(spec)
    }

    @Test func coverage() throws {
        let schnet = try SchNet(SchNet.Config(features: 4, layers: 1, cutoff: 4, radialBasis: 4, elements: [14, 32]))
        #expect(schnet.coveredElements == [14, 32])
        #expect(schnet.uncoveredElements([14, 6, 1, 14]) == [1, 6])
        #expect(StillingerWeber().coveredElements == nil)
        var s = Structure.diamond(a: 5.431, repeats: 1)
        try schnet.checkInput(s, name: "si")
        s.numbers[2] = 6
        do {
            try schnet.checkInput(s, name: "sic.xyz", potentialName: "model.safetensors")
            Issue.record("accepted")
        } catch let e as PotentialInputError {
            #expect(e.message == "sic.xyz contains C, which model.safetensors does not cover (its elements: Si, Ge)", "\(e)")
        }
        // Positions beyond the binnable range are input errors too.
        var far = Structure.diamond(a: 5.431, repeats: 1)
        far.positions[0, 0] = 1e20
        #expect(throws: PotentialInputError.self) { try StillingerWeber().checkInput(far, name: "far") }
    }

    /// The closed-form parameter counts (checked against memory before anything is allocated) equal the counts
    /// of the initialised models.
    @Test(arguments: [(4, 1, 4, 1, 1), (48, 2, 32, 4, 3), (6, 3, 8, 2, 2), (12, 0, 5, 3, 3)])
    func parameterCountsAreExact(features: Int, layers: Int, basis: Int, heads: Int, degree: Int) throws {
        let so3 = SO3krates.Config(features: features, layers: layers, heads: heads, maxDegree: degree, cutoff: 5, radialBasis: basis, elements: [14, 6])
        #expect(so3.parameterCount == Double(try SO3krates(so3).parameterCount))
        let sch = SchNet.Config(features: features, layers: layers, cutoff: 5, radialBasis: basis, elements: [14, 6, 1])
        #expect(sch.parameterCount == Double(try SchNet(sch).parameterCount))
    }

    @Test func hugeArchitecturesAreRefusedBeforeAllocating() {
        for f in [100_000, 1_000_000_000] {
            #expect(throws: PotentialSpecError.self) { _ = try SchNet(SchNet.Config(features: f, layers: 2)) }
            #expect(throws: PotentialSpecError.self) { _ = try SO3krates(SO3krates.Config(features: f, layers: 2, heads: 1, maxDegree: 1)) }
        }
        do { _ = try SchNet(SchNet.Config(features: 100_000, layers: 2)) } catch {
            #expect("\(error)".contains("schnet with 100000 features") && "\(error)".contains("would need about"), "\(error)")
        }
        #expect(throws: PotentialSpecError.self) { _ = try SchNet(SchNet.Config(features: 8, layers: 2, cutoff: 1e6)) }
    }

    func file(_ header: [String: Any], data: Data) -> Data {
        let json = try! JSONSerialization.data(withJSONObject: header)
        var out = Data()
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        return out + json + data
    }

    /// Sizes from a safetensors header never trap: overflowing shapes and offsets are errors naming the tensor.
    @Test(arguments: [[4_611_686_018_427_387_904, 4], [1_152_921_504_606_846_976], [-1], [Int.max, Int.max]])
    func overflowingShapes(_ shape: [Int]) {
        let d = file(["w": ["dtype": "F64", "shape": shape, "data_offsets": [0, 8]]], data: Data(count: 8))
        do {
            _ = try SafeTensors.parse(d, path: "m.safetensors")
            Issue.record("accepted")
        } catch let e as SafeTensors.FileError {
            #expect(e.description.hasPrefix("m.safetensors: tensor 'w'"), "\(e)")
        } catch { Issue.record("\(error)") }
    }

    @Test(arguments: [[0, 16], [Int.max - 8, Int.max], [-8, 0], [8, 0], [0, 9]])
    func offsetsOutsideTheFile(_ offsets: [Int]) {
        let d = file(["w": ["dtype": "F64", "shape": [1], "data_offsets": offsets]], data: Data(count: 8))
        #expect(throws: SafeTensors.FileError.self) { _ = try SafeTensors.parse(d, path: "m.safetensors") }
    }

    @Test func modelFilesWithNonsenseAreRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-validation-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var sw = StillingerWeber()
        sw.parameters["lambda"] = Tensor(scalar: .nan)
        try ModelFile.save(sw, to: dir + "/nan.safetensors")
        do { _ = try ModelFile.load(dir + "/nan.safetensors"); Issue.record("accepted") } catch let e as PotentialSpecError {
            #expect(e.message.contains("nan.safetensors") && e.message.contains("lambda"), "\(e)")
        }
        var lj = LennardJones(sigma: 2, epsilon: 0.1, rc: 5)
        lj.parameters["sigma"] = Tensor(shape: [2], [1, 2])
        try ModelFile.save(lj, to: dir + "/vector.safetensors")
        #expect(throws: PotentialSpecError.self) { _ = try ModelFile.load(dir + "/vector.safetensors") }
        let schnet = try SchNet(SchNet.Config(features: 4, layers: 1, cutoff: 4, radialBasis: 4))
        try ModelFile.save(schnet, to: dir + "/ok.safetensors", extraMetadata: ["cutoff": "1e6"])
        do { _ = try ModelFile.load(dir + "/ok.safetensors"); Issue.record("accepted") } catch let e as PotentialSpecError {
            #expect(e.message.contains("cutoff"), "\(e)")
        }
    }
}
