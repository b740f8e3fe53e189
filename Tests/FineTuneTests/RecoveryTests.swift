import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
import Loss
@testable import FineTune

func recoveryExamples(_ split: String) throws -> [RelaxationExample] {
    let path = repoRoot.appendingPathComponent("Fixtures/data/sw-recovery/\(split).extxyz").path
    return try RelaxationDataset.examples(from: try StructureIO.read(path), source: path)
}

@Suite("Known-truth recovery", .serialized)
struct RecoveryTests {
    @Test func perturbedStillingerWeberRecoversPublishedParameters() throws {
        let train = try recoveryExamples("train"), test = try recoveryExamples("test")
        let pretrained = try PotentialSpec.parse("sw:sigma=2.157953,lambda=18.9")
        var config = FineTuneConfig(pretrained: "sw:sigma=2.157953,lambda=18.9")
        config.relaxer = FIRE()
        config.steps = 60
        config.gradient = .checkpoint(every: nil)
        config.trainParameters = ["sigma", "lambda"]
        config.epochs = Int(ProcessInfo.processInfo.environment["RECOVERY_EPOCHS"] ?? "12")!
        config.learningRate = 0.01
        config.relativeLearningRate = true
        config.batchSize = 4
        config.validationFraction = 0.25
        config.schedule = "cosine"
        config.threads = 2
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-recovery-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trainer = try FineTuneTrainer(config: config, potential: pretrained, examples: train, runDirectory: dir)
        let summary = try trainer.run { event in
            if case .epoch(let m, _) = event { print("EPOCH", m.epoch, m.trainDQMean, m.valDQMean ?? -1, m.seconds) }
        }
        let (best, meta) = try ModelFile.load(trainer.bestModelPath)
        let proto = RelaxationProtocol.fromMetadata(meta)!
        let before = evaluateRelaxations(test, potential: pretrained, protocol: proto).map(\.deltaQ)
        let after = evaluateRelaxations(test, potential: best, protocol: proto).map(\.deltaQ)
        let cut = 1 - ErrorSummary(after).mean / ErrorSummary(before).mean
        print("RECOVERY before", ErrorSummary(before).mean, "after", ErrorSummary(after).mean, "cut", cut,
              "sigma", best.parameters["sigma"]!.scalar, "lambda", best.parameters["lambda"]!.scalar, summary.seconds)
        #expect(cut >= 0.9)
        #expect(abs(best.parameters["sigma"]!.scalar - 2.0951) < 0.005)
        #expect(abs(best.parameters["lambda"]!.scalar - 21) < 0.5)
    }
}
