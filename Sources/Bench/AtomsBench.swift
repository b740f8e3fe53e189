import Atoms
import Foundation
import Tape

enum AtomsBench {
    static func neighbors() {
        print("== neighbour list: diamond Si, cutoff 5 Å ==")
        print("atoms     pairs        build time    per atom")
        for r in [2, 4, 8, 16] {
            let s = Structure.diamond(repeats: r)
            var pairs = 0
            let t = measureBoth(minRuns: r >= 16 ? 3 : 10, minSeconds: r >= 16 ? 1 : 0.5) {
                pairs = NeighborList.build(s, cutoff: 5.0).pairCount
            }
            print("\(String(s.count).padding(toLength: 9, withPad: " ", startingAt: 0)) \(String(pairs).padding(toLength: 12, withPad: " ", startingAt: 0)) \(fmtTime(t.min).padding(toLength: 13, withPad: " ", startingAt: 0)) \(fmtTime(t.min / Double(s.count)))")
        }
    }
}
