import Foundation
import Testing
import Tape
import Atoms
import Potentials
@testable import Relax


/// A stored ASE trajectory (Fixtures/relax, see its README).
struct ReferenceTrajectory {
    let meta: [String: Any]
    let structure: Structure
    /// Stored frames: index → (positions, cell).
    let frames: [Int: (Tensor, Tensor)]
    let frameCount: Int
    let energies: [Double]

    init(_ name: String) throws {
        let dir = repoRoot.appendingPathComponent("Fixtures/relax")
        meta = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("\(name).json"))) as! [String: Any]
        let numbers = meta["numbers"] as! [Int]
        let n = numbers.count
        let cell = Tensor(shape: [3, 3], (meta["cell"] as! [[Double]]).flatMap { $0 })
        let x0 = Tensor(shape: [n, 3], (meta["initial_positions"] as! [[Double]]).flatMap { $0 })
        structure = Structure(numbers: numbers, positions: x0, cell: cell, pbc: meta["pbc"] as! [Bool])
        let raw = try Data(contentsOf: dir.appendingPathComponent("\(name).f64"))
        let values: [Double] = raw.withUnsafeBytes { p in (0..<(raw.count / 8)).map { Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) } }
        let withCell = meta["with_cell"] as! Bool
        let per = 3 * n + (withCell ? 9 : 0)
        var fr: [Int: (Tensor, Tensor)] = [:]
        for (k, idx) in (meta["stored_frames"] as! [Int]).enumerated() {
            let block = Array(values[(k * per)..<((k + 1) * per)])
            fr[idx] = (Tensor(shape: [n, 3], Array(block[0..<(3 * n)])), withCell ? Tensor(shape: [3, 3], Array(block[(3 * n)...])) : cell)
        }
        frames = fr
        frameCount = meta["frames"] as! Int
        energies = meta["energy"] as! [Double]
    }

    var potential: any Potential {
        switch meta["potential"] as! String {
        case "lj": return LennardJones(sigma: 2.0951, epsilon: 1, rc: 3.2, ro: 2.8, smooth: true)
        case "lj_fcc": return LennardJones(sigma: 2.3, epsilon: 0.1, rc: 5.5, ro: 4.5, smooth: true)
        default: return StillingerWeber()
        }
    }
}

/// Runs relaxft's relaxer on a reference and compares every stored frame.
func compare(_ name: String, relaxer: any Relaxer, relaxCell: Bool = false, pressureGPa: Double = 0) throws -> (maxEarly: Double, final: Double, steps: Int, refSteps: Int) {
    let ref = try ReferenceTrajectory(name)
    var settings = RelaxationSettings()
    settings.fmax = ref.meta["fmax_target"] as! Double
    settings.maxSteps = 5000
    settings.relaxCell = relaxCell
    settings.pressure = pressureGPa / 160.21766208
    var frames: [(Tensor, Tensor, Double)] = []
    let result = relax(ref.structure, potential: ref.potential, relaxer: relaxer, settings: settings) { (s: RelaxationStep) in
        frames.append((s.positions, s.cell, s.energy))
    }
    var maxEarly = 0.0
    for k in 0..<min(101, ref.frameCount, frames.count) {
        guard let (x, c) = ref.frames[k] else { continue }
        maxEarly = max(maxEarly, frames[k].0.maxAbsDifference(x))
        if relaxCell { maxEarly = max(maxEarly, frames[k].1.maxAbsDifference(c)) }
    }
    let (xf, cf) = ref.frames[ref.frameCount - 1]!
    var final = result.structure.positions.maxAbsDifference(xf)
    if relaxCell { final = max(final, result.structure.cell.maxAbsDifference(cf)) }
    return (maxEarly, final, result.steps, ref.frameCount - 1)
}

@Suite("Relaxers against ASE, step by step")
struct ASEReferenceTests {
    static let sizes = ["2x2x2", "3x3x3", "4x4x4"]

    func expectAgreement(_ name: String, _ r: (maxEarly: Double, final: Double, steps: Int, refSteps: Int)) {
        #expect(r.maxEarly <= 1e-8, "\(name): max deviation over the first 100 steps \(r.maxEarly) Å")
        #expect(r.final <= 1e-6, "\(name): final structure deviates by \(r.final) Å")
        #expect(r.steps == r.refSteps, "\(name): \(r.steps) steps, ASE took \(r.refSteps)")
    }

    @Test(arguments: ["lj", "sw"], sizes)
    func fire(pot: String, size: String) throws {
        let name = "\(pot)_fire_\(size)"
        expectAgreement(name, try compare(name, relaxer: FIRE()))
    }

    @Test(arguments: ["lj", "sw"], sizes)
    func bfgs(pot: String, size: String) throws {
        let name = "\(pot)_bfgs_\(size)"
        expectAgreement(name, try compare(name, relaxer: BFGS()))
    }

    @Test(arguments: ["lj", "sw"], ["2x2x2", "3x3x3"])
    func lbfgs(pot: String, size: String) throws {
        let name = "\(pot)_lbfgs_\(size)"
        expectAgreement(name, try compare(name, relaxer: LBFGS()))
    }

    @Test(arguments: ["bfgs", "fire"], [0.0, 1.0])
    func cellRelaxation(relaxer: String, pressure: Double) throws {
        let name = "lj_cell_\(relaxer)_p\(Int(pressure))"
        let r: any Relaxer = relaxer == "bfgs" ? BFGS() : FIRE()
        expectAgreement(name, try compare(name, relaxer: r, relaxCell: true, pressureGPa: pressure))
    }
}
