import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
@testable import FineTune

@Suite("Training loop")
struct TrainerTests {
    func config() -> FineTuneConfig {
        var c = FineTuneConfig(pretrained: "sw:sigma=2.157953,lambda=18.9")
        c.relaxer = ForceFollowing(eta: 0.01, maxstep: 0.1)
        c.steps = 8
        c.trainRelaxer = ["eta"]
        c.epochs = 4
        c.learningRate = 0.01
        c.relativeLearningRate = true
        c.batchSize = 2
        c.validationFraction = 0.25
        c.schedule = "cosine"
        c.seed = 7
        c.threads = 2
        return c
    }

    @Test func resumeIsExact() throws {
        let examples = Array(try recoveryExamples("train").prefix(5))
        let a = try temporaryDirectory("resume-a"), b = try temporaryDirectory("resume-b")
        defer { try? FileManager.default.removeItem(atPath: a); try? FileManager.default.removeItem(atPath: b) }
        let straight = try FineTuneTrainer(config: config(), potential: try PotentialSpec.parse(config().pretrained), examples: examples, runDirectory: a)
        let straightSummary = try straight.run()
        let first = try FineTuneTrainer(config: config(), potential: try PotentialSpec.parse(config().pretrained), examples: examples, runDirectory: b)
        _ = try first.run(stopAfterEpoch: 2)
        let resumed = try FineTuneTrainer(config: config(), potential: try PotentialSpec.parse(config().pretrained), examples: examples, runDirectory: b)
        try resumed.resume()
        #expect(resumed.state.nextEpoch == 2)
        let summary = try resumed.run()
        // The cost is summed over the processes that worked on the run.
        #expect(straightSummary.sessions == 1 && summary.sessions == 2, "sessions \(String(describing: summary.sessions))")
        #expect((summary.cpu_seconds ?? 0) > (straightSummary.cpu_seconds ?? 0) * 0.1)
        #expect(resumed.potential.parameters == straight.potential.parameters)
        #expect(resumed.state.relaxer.hyperparameters.dictionary == straight.state.relaxer.hyperparameters.dictionary)
        #expect(RelaxerFactory.equal(resumed.state.relaxer, straight.state.relaxer))
        #expect(resumed.state.history.map(\.trainDQMean) == straight.state.history.map(\.trainDQMean))
        let m1 = try String(contentsOfFile: a + "/metrics.csv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",").dropLast().joined(separator: ",") }
        let m2 = try String(contentsOfFile: b + "/metrics.csv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",").dropLast().joined(separator: ",") }
        #expect(m1 == m2, "metrics except timings")
        // The relaxer's step size was trained and stored with the model.
        let (_, meta) = try ModelFile.load(resumed.bestModelPath)
        #expect(RelaxationProtocol.fromMetadata(meta)!.relaxer.name == "frame")
    }

    /// E = √p · Σ|x|²: with p < 0 every energy, force and gradient is NaN.
    struct NaNPotential: Potential {
        var parameters = OrderedDictionary<Tensor>()
        var kind: String { "nan-test" }
        var cutoff: Double { 1 }
        var metadata: [String: String] { [:] }
        init() { parameters["p"] = Tensor(scalar: -1) }
        func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters: [String: Variable]) -> Variable {
            (positions.squared().sum() * parameters["p"]!.sqrt()).reshaped([1])
        }
    }

    @Test func nonFiniteGradientsAreSkippedAndCounted() throws {
        var c = config()
        c.epochs = 1
        c.validationFraction = 0
        c.trainRelaxer = []
        let dir = try temporaryDirectory("nan")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let examples = Array(try recoveryExamples("train").prefix(2))
        let t = try FineTuneTrainer(config: c, potential: NaNPotential(), examples: examples, runDirectory: dir)
        let before = t.potential.parameters
        // The run ends with an error when it reloads the best model: this test potential has no model-file kind.
        _ = try? t.run()
        #expect(t.state.skippedSteps >= 1)
        #expect(t.potential.parameters == before)
    }

    /// The run directory holds a checkpoint before the first relaxation: a run stopped right after its initial
    /// evaluation (or killed during it) resumes to the same end.
    @Test func resumeFromTheStartingCheckpointIsExact() throws {
        let examples = Array(try recoveryExamples("train").prefix(4))
        var c = config()
        c.epochs = 2
        let a = try temporaryDirectory("start-a"), b = try temporaryDirectory("start-b")
        defer { try? FileManager.default.removeItem(atPath: a); try? FileManager.default.removeItem(atPath: b) }
        let straight = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, runDirectory: a)
        _ = try straight.run()
        let first = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, runDirectory: b)
        _ = try first.run(stopAfterEpoch: 0)
        #expect(FileManager.default.fileExists(atPath: b + "/checkpoint.safetensors") && first.state.history.isEmpty)
        let resumed = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, runDirectory: b)
        try resumed.resume()
        _ = try resumed.run()
        #expect(resumed.potential.parameters == straight.potential.parameters)
        #expect(resumed.state.history.map(\.trainDQMean) == straight.state.history.map(\.trainDQMean))
        // A new run over it is refused.
        #expect(throws: RunDirectoryError.self) { _ = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, runDirectory: b).run() }
    }

    /// A checkpoint written before the relaxer was stored typed (only its hyperparameters, "hyper") resumes to the
    /// same result: the run's configured relaxer gives the kind.
    @Test func checkpointWithUntypedRelaxerResumes() throws {
        let examples = Array(try recoveryExamples("train").prefix(4))
        var c = config()
        c.epochs = 3
        let a = try temporaryDirectory("typed-a"), b = try temporaryDirectory("typed-b")
        defer { try? FileManager.default.removeItem(atPath: a); try? FileManager.default.removeItem(atPath: b) }
        let straight = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, runDirectory: a)
        _ = try straight.run()
        _ = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, runDirectory: b).run(stopAfterEpoch: 1)
        let path = b + "/checkpoint.safetensors"
        var (tensors, meta) = try SafeTensors.read(path)
        // Edited as text: a JSON parser that is not correctly rounded would change the other numbers of the state.
        let text = try #require(meta["finetune_state"])
        let start = try #require(text.range(of: "\"relaxer\":{\"hyperparameters\":"))
        let hyperEnd = try #require(text[start.upperBound...].firstIndex(of: "}"))
        let hyper = text[start.upperBound...hyperEnd]
        let rest = text[text.index(after: hyperEnd)...]
        #expect(rest.hasPrefix(",\"relaxer\":\"frame\"}"))
        meta["finetune_state"] = text[..<start.lowerBound] + "\"hyper\":" + hyper + rest.dropFirst(",\"relaxer\":\"frame\"}".count)
        try SafeTensors.write(tensors, metadata: meta, to: path)
        tensors = []
        let resumed = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, runDirectory: b)
        try resumed.resume()
        _ = try resumed.run()
        #expect(resumed.potential.parameters == straight.potential.parameters)
        #expect(resumed.state.relaxer.hyperparameters.dictionary == straight.state.relaxer.hyperparameters.dictionary)
    }

    @Test func splitIsReproducibleAndDisjoint() {
        let (tr, va) = RelaxationDataset.split(count: 20, validationFraction: 0.25, seed: 3)
        let (tr2, va2) = RelaxationDataset.split(count: 20, validationFraction: 0.25, seed: 3)
        #expect(tr == tr2 && va == va2)
        #expect(va.count == 5 && Set(tr).isDisjoint(with: va) && tr.count + va.count == 20)
        #expect(RelaxationDataset.split(count: 20, validationFraction: 0.25, seed: 4).validation != va)
    }

    @Test func mismatchedPairsAreClearErrors() throws {
        let dir = repoRoot.appendingPathComponent("Fixtures/data/sw-recovery").path
        let train = try StructureIO.read(dir + "/train.extxyz"), test = try StructureIO.read(dir + "/test.extxyz")
        #expect(throws: DatasetError.self) { try RelaxationDataset.examples(initial: train, target: test, initialSource: "a", targetSource: "b") }
        var other = Array(train.prefix(2))
        other[1].numbers[0] = 6
        do {
            _ = try RelaxationDataset.examples(initial: Array(train.prefix(2)), target: other, initialSource: "a.xyz", targetSource: "b.xyz")
            Issue.record("expected an error")
        } catch let e as DatasetError {
            #expect(e.message.contains("frame 1, atom 0: species Si in a.xyz but C in b.xyz"))
        }
        var noTarget = train[0]
        noTarget.arrays["pos_relaxed"] = nil
        #expect(throws: DatasetError.self) { try RelaxationDataset.examples(from: [noTarget], source: "x") }
    }
}
