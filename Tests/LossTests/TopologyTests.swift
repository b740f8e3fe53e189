import Testing
import Atoms
import Loss

/// The bond graph behind the "same basin" metric of relaxft evaluate.
@Suite struct TopologyTests {
    @Test func diamondHasFourBondsPerAtom() {
        let si = Structure.diamond(repeats: 2)
        let bonds = BondingTopology.bonds(si, positions: si.positions)
        #expect(bonds.count == 4 * si.count, "directed pairs: 4 per atom")
        #expect(BondingTopology.differingBonds(si, positions: si.positions, reference: si.positions) == 0)
    }

    /// Reference positions are often unwrapped: a lattice translation of single atoms changes nothing.
    @Test func unwrappedReferenceHasTheSameBonds() {
        let si = Structure.diamond(repeats: 2)
        var shifted = si.positions
        for a in [0, 5, 17] { for c in 0..<3 { shifted[a, c] += si.cell[0, c] - si.cell[2, c] } }
        #expect(BondingTopology.differingBonds(si, positions: si.positions, reference: shifted) == 0)
    }

    /// An atom moved into the neighbouring tetrahedral interstitial site keeps one bond and swaps three.
    @Test func movedAtomChangesTheTopology() {
        let si = Structure.diamond(repeats: 2)
        var moved = si.positions
        // Atom 0 sits at the origin; (a/2, a/2, a/2) is a tetrahedral site whose four neighbours include
        // (a/4, a/4, a/4), already bonded to atom 0: three bonds broken, three made.
        for c in 0..<3 { moved[0, c] += 5.431 / 2 }
        #expect(BondingTopology.differingBonds(si, positions: moved, reference: si.positions) == 6)
    }
}
