import Testing
import Tape
@testable import Atoms

@Suite struct StructureTests {
    @Test func massesDefaultToStandardWeights() {
        var s = Structure(numbers: [14, 6], positions: Tensor.zeros([2, 3]))
        #expect(s.masses == [28.085, 12.011])
        s.customMasses = [28.0, 13.0]
        #expect(s.masses == [28.0, 13.0])
        #expect(Elements.symbols[94] == "Pu")
    }

    @Test func voigtStressIsExpanded() {
        var s = Structure(numbers: [14], positions: Tensor.zeros([1, 3]))
        s.info["stress"] = .doubles([1, 2, 3, 4, 5, 6])
        #expect(s.stress!.array == [1, 6, 5, 6, 2, 4, 5, 4, 3])
    }
}
