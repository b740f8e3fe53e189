import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
@testable import FineTune

/// The committed SO3krates before and after fine-tuning through relaxations (Fixtures/models): the fine-tuned file
/// carries the relaxation it was trained with and its training lineage, and relaxes a held-out test structure
/// closer to DFT than the pretrained model does under that relaxation.
@Suite struct CommittedModelTests {
    static let models = repoRoot.appendingPathComponent("Fixtures/models").path

    @Test func bpttModelCarriesItsProtocolAndLineageAndBeatsThePretrainedModel() throws {
        let (pre, preMeta) = try ModelFile.load(Self.models + "/si-so3krates-pretrained.safetensors")
        let (ft, meta) = try ModelFile.load(Self.models + "/si-so3krates-bptt.safetensors")
        #expect(ft.kind == "so3krates" && ft.parameterCount == pre.parameterCount)
        #expect(ft.parameters.keys.contains { ft.parameters[$0] != pre.parameters[$0] })
        let proto = try #require(RelaxationProtocol.fromMetadata(meta))
        #expect(proto.relaxer.name == "fire" && proto.steps == 60)
        // Earlier stages are kept apart: the VASP pretraining, then energy/force matching on the GPAW frames.
        let lineage = try JSONDecoder().decode([[String: String]].self, from: Data(try #require(meta["lineage"]).utf8))
        #expect(lineage.count == 2 && lineage[0]["training_command"] == preMeta["training_command"])
        #expect(lineage[1]["training_command"]?.hasPrefix("relaxft pretrain --init") == true)
        #expect(meta["test_mlearn_test"] == nil && !meta.values.contains { $0.contains(" /") || $0.contains("\"/") || $0.hasPrefix("/") }, "absolute paths are machine-specific")

        let path = repoRoot.appendingPathComponent("Fixtures/data/si-defects/test.extxyz").path
        let frames = try StructureIO.read(path).filter { $0.info["structure_id"]?.stringValue == "vacancy-3100" }
        let examples = try RelaxationDataset.examples(from: frames, source: path)
        #expect(examples.count == 1)
        let before = evaluateRelaxations(examples, potential: pre, protocol: proto)[0].deltaQ
        let after = evaluateRelaxations(examples, potential: ft, protocol: proto)[0].deltaQ
        // Measured: 3.30 → 0.36 amu^½·Å (docs/results.md, own protocol); the test asks for at least a halving.
        #expect(after < 0.5 * before, "ΔQ pretrained \(before), fine-tuned \(after)")
    }

    /// The refreshed SO3krates (energy/force matching on the GPAW relaxation steps, the validation choice of the
    /// full-size experiment) relaxes a held-out vacancy to FIRE's 0.01 eV/Å closer to DFT than the pretrained model.
    @Test func refreshedSO3kratesBeatsThePretrainedModelOnAHeldOutVacancy() throws {
        let (pre, _) = try ModelFile.load(Self.models + "/si-so3krates-pretrained.safetensors")
        let (ft, meta) = try ModelFile.load(Self.models + "/si-so3krates-ef.safetensors")
        #expect(ft.kind == "so3krates" && ft.parameterCount == pre.parameterCount)
        #expect(meta["training_command"]?.hasPrefix("relaxft pretrain --init") == true)
        #expect(!meta.values.contains { $0.contains(" /") || $0.contains("\"/") || $0.hasPrefix("/") }, "absolute paths are machine-specific")
        let path = repoRoot.appendingPathComponent("Fixtures/data/si-defects/test.extxyz").path
        let frames = try StructureIO.read(path).filter { $0.info["structure_id"]?.stringValue == "vacancy-3100" }
        let examples = try RelaxationDataset.examples(from: frames, source: path)
        let proto = RelaxationProtocol(relaxer: FIRE(), steps: 500, stopFmax: 0.01)
        let before = evaluateRelaxations(examples, potential: pre, protocol: proto)[0].deltaQ
        let after = evaluateRelaxations(examples, potential: ft, protocol: proto)[0].deltaQ
        // Measured (the experiment's evaluation): 3.28 → 0.398 amu^½·Å; the test asks for a factor of four.
        #expect(after < 0.25 * before, "ΔQ pretrained \(before), refreshed \(after)")
    }

    static let chgnetStore = ModelStore.path(of: "chgnet-0.3.0")

    /// The committed fine-tuned CHGNet is a difference from the pulled CHGNet 0.3.0 (its weights are not in this
    /// repository): it loads on top of them, differs from them, carries its training protocol, and relaxes a held-out
    /// vacancy closer to DFT than CHGNet 0.3.0 does under that protocol.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: chgnetStore), "CHGNet 0.3.0 not pulled: run 'relaxft models pull chgnet-0.3.0'"))
    func fineTunedCHGNetLoadsOnThePulledWeightsAndBeatsThem() throws {
        let (base, _) = try ModelFile.load(Self.chgnetStore)
        let (ft, meta) = try ModelFile.load(Self.models + "/chgnet-0.3.0-si-ef-bptt.safetensors")
        #expect(ft.kind == "chgnet" && ft.parameterCount == base.parameterCount && meta[ModelDelta.baseKey] == "chgnet-0.3.0")
        #expect(ft.parameters.keys.contains { !ft.parameters[$0]!.bitwiseEqual(base.parameters[$0]!) })
        let raw = try SafeTensors.read(Self.models + "/chgnet-0.3.0-si-ef-bptt.safetensors").tensors
        #expect(raw.count >= base.parameters.count && raw.allSatisfy { $0.name.hasPrefix("delta_exact/") || base.parameters[$0.name] != nil })
        let proto = try #require(RelaxationProtocol.fromMetadata(meta))
        #expect(proto.relaxer.name == "fire" && proto.steps == 60)
        let path = repoRoot.appendingPathComponent("Fixtures/data/si-defects/test.extxyz").path
        let frames = try StructureIO.read(path).filter { $0.info["structure_id"]?.stringValue == "vacancy-3100" }
        let examples = try RelaxationDataset.examples(from: frames, source: path)
        let before = evaluateRelaxations(examples, potential: base, protocol: proto)[0].deltaQ
        let after = evaluateRelaxations(examples, potential: ft, protocol: proto)[0].deltaQ
        #expect(after < 0.6 * before, "ΔQ CHGNet 0.3.0 \(before), fine-tuned \(after)")
    }
}
