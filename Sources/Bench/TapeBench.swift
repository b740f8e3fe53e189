import CLinalg
import Foundation
import Tape

enum TapeBench {
    static func run() {
        print("== tape ==")
        if ProcessInfo.processInfo.environment["BENCH_DENSE_ONLY"] != nil { dense(); return }
        // Chain of small elementwise ops on a 3-vector: pure per-node cost.
        let chain = 1000
        let x0 = Tensor([0.1, 0.2, 0.3])
        let tRecord = measure {
            let tape = Tape()
            var x = tape.variable(x0)
            for _ in 0..<chain { x = x * 1.0001 + 0.001 }
        }
        let tBoth = measure {
            let tape = Tape()
            let leaf = tape.variable(x0)
            var x = leaf
            for _ in 0..<chain { x = x * 1.0001 + 0.001 }
            _ = tape.gradient(of: x.sum(), wrt: [leaf])
        }
        let nodes = Double(2 * chain)
        print("elementwise chain (3-vectors, \(2 * chain) nodes): record \(fmt(nodes / tRecord / 1e6)) M nodes/s (\(fmtTime(tRecord / nodes))/node); record+backward \(fmtTime(tBoth / nodes))/node")

        dense()
    }

    static func dense() {
        // Dense layer 256×64 → 64 with SiLU: forward + backward (dE/dX, dE/dW, dE/db) vs its raw BLAS calls.
        var rng = SeededGenerator(seed: 1)
        let X = rng.normalTensor([256, 64]), W = rng.normalTensor([64, 64], scale: 0.125), b = rng.normalTensor([64])
        let w2 = rng.normalTensor([256, 64])
        func layer(createGraph: Bool) {
            let tape = Tape()
            let x = tape.variable(X), w = tape.variable(W), bb = tape.variable(b)
            let y = (matmul(x, w) + bb).silu()
            let e = (y * w2).sum()
            _ = tape.gradient(of: e, wrt: [x, w, bb], createGraph: createGraph)
        }
        let tLayer = measureBoth(minRuns: 50) { layer(createGraph: false) }
        let tLayerCG = measureBoth(minRuns: 50) { layer(createGraph: true) }
        var C = [Double](repeating: 0, count: 256 * 64), dW = [Double](repeating: 0, count: 64 * 64), dX = [Double](repeating: 0, count: 256 * 64)
        let Xa = X.array, Wa = W.array, Ga = w2.array
        let tBlas = measureBoth(minRuns: 50) {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 256, 64, 64, 1, Xa, 64, Wa, 64, 0, &C, 64)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 64, 64, 256, 1, Xa, 64, Ga, 64, 0, &dW, 64)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 256, 64, 64, 1, Ga, 64, Wa, 64, 0, &dX, 64)
        }
        print("dense 256×64→64 + SiLU, forward+backward: median \(fmtTime(tLayer.median)) (min \(fmtTime(tLayer.min))); raw BLAS (3 dgemm): median \(fmtTime(tBlas.median)) (min \(fmtTime(tBlas.min))); ratio of minima \(fmt(tLayer.min / tBlas.min)) (target ≤ 2)")
        print("same with createGraph: true: median \(fmtTime(tLayerCG.median)) (min \(fmtTime(tLayerCG.min))); ratio of minima \(fmt(tLayerCG.min / tBlas.min))")
        let gflops = 3 * 2.0 * 256 * 64 * 64 / tBlas.min / 1e9
        print("raw dgemm rate here: \(fmt(gflops)) GFLOP/s")
    }
}
